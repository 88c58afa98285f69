# Passed as -DCMAKE_PROJECT_INCLUDE=<this file> by tools/build_vision_msgs.sh.
#
# Why: the ROS 2 message wheels from PyPI (std_msgs, geometry_msgs, ...) ship exported CMake
# targets (<pkg>__rosidl_generator_py) whose INTERFACE_INCLUDE_DIRECTORIES name directories of
# the machine that built the wheels (/opt/python/cp311-cp311/...). CMake refuses to generate a
# project that links to an imported target with a non-existent include directory, so building
# any message package against those wheels fails. Python3_INCLUDE_DIR does not help: the paths
# are hard-coded in the wheels' *Export.cmake files.
#
# What: once configuration of the top directory is over (deferred call), drop every include
# directory that does not exist from the imported targets of that directory. On a real ROS
# install all those directories exist, so this changes nothing there.

function(_segtrack_drop_missing_imported_include_dirs)
  get_directory_property(_targets DIRECTORY "${CMAKE_SOURCE_DIR}" IMPORTED_TARGETS)
  set(_fixed "")
  foreach(_target IN LISTS _targets)
    get_target_property(_dirs "${_target}" INTERFACE_INCLUDE_DIRECTORIES)
    if(NOT _dirs)
      continue()
    endif()
    set(_kept "")
    set(_dropped FALSE)
    foreach(_dir IN LISTS _dirs)
      # Keep generator expressions and directories that exist; drop the rest.
      if(_dir MATCHES "\\$<" OR IS_DIRECTORY "${_dir}")
        list(APPEND _kept "${_dir}")
      else()
        set(_dropped TRUE)
      endif()
    endforeach()
    if(_dropped)
      set_target_properties("${_target}" PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_kept}")
      list(APPEND _fixed "${_target}")
    endif()
  endforeach()
  if(_fixed)
    list(LENGTH _fixed _count)
    message(STATUS "fix_wheel_cmake_targets: dropped missing include dirs of ${_count} targets")
  endif()
endfunction()

if(CMAKE_CURRENT_SOURCE_DIR STREQUAL CMAKE_SOURCE_DIR)
  cmake_language(DEFER DIRECTORY "${CMAKE_SOURCE_DIR}"
    CALL _segtrack_drop_missing_imported_include_dirs)
endif()
