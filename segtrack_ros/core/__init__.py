"""The core: model, tracking, masks, drawing and label images on numpy arrays; no ROS."""
