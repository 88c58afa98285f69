"""
Which model and where it runs: model names and paths, loading a model, torch device names.

Every way a model is named (a path, an official name that ultralytics may download, a model
yaml, the bundled `shapes-seg.pt`) is resolved and loaded here, and refused with the fix when it
is no segmentation model; `resolve_device` turns a device name into torch's. The `Segmenter`
uses both when it is made.
"""

from pathlib import Path

from segtrack_ros.core.errors import SegmenterError

BUNDLED_MODEL = Path(__file__).resolve().parents[1] / 'data' / 'shapes-seg.pt'


def resolve_device(spec):
    """
    Turn a device name into the one torch uses: `auto` is the first CUDA GPU, else the CPU.

    `cpu`, `cuda`, `cuda:N`, `N` (= `cuda:N`) and `mps` are accepted; asking for a GPU that is not
    there raises `SegmenterError` rather than falling back silently to the CPU.
    """
    import torch

    spec = str(spec).strip().lower()
    if spec == 'auto':
        return 'cuda:0' if torch.cuda.is_available() else 'cpu'
    if spec == 'cpu':
        return 'cpu'
    if spec == 'mps':
        if not torch.backends.mps.is_available():
            raise SegmenterError("device 'mps' is not available here: use device 'cpu' or 'auto'")
        return 'mps'
    index = spec.removeprefix('cuda').removeprefix(':') or '0'
    if not index.isdigit():
        raise SegmenterError(
            f"device '{spec}' is not understood: use auto, cpu, cuda, cuda:N, N or mps")
    if not torch.cuda.is_available():
        raise SegmenterError(
            f"device '{spec}' needs CUDA, which this machine's torch does not have: "
            "use device 'cpu' or 'auto'")
    if int(index) >= torch.cuda.device_count():
        raise SegmenterError(
            f"device '{spec}': only {torch.cuda.device_count()} CUDA device(s) here")
    return f'cuda:{index}'


def is_official_model_name(name):
    """Tell whether ultralytics can download `name` (e.g. `yolov8n-seg.pt`) from its releases."""
    from ultralytics.utils.downloads import GITHUB_ASSETS_NAMES

    return name in GITHUB_ASSETS_NAMES


def local_path(name):
    """Return the path model `name` stands for here: `shapes-seg.pt` is the bundled model."""
    path = Path(name).expanduser()
    return BUNDLED_MODEL if name == BUNDLED_MODEL.name and not path.exists() else path


def load_model(name):
    """
    Load a YOLO segmentation model from a path, an official name, or a model yaml (untrained).

    Paths (`.pt`, `.onnx`, `.engine`, OpenVINO folders, ...) must exist; only official names
    such as `yolov8n-seg.pt` may be downloaded, and only when they are not found locally.
    `shapes-seg.pt` names the model bundled with the package. `.pt` files are Python pickles:
    load only weights you trust.
    """
    from ultralytics import YOLO

    path = local_path(name)
    is_yaml = name.endswith(('.yaml', '.yml'))
    if not path.exists() and not is_yaml and not is_official_model_name(name):
        raise SegmenterError(
            f"model '{name}' not found: give the path of a .pt/.onnx/.engine file or an "
            'OpenVINO folder, or an official name such as yolov8n-seg.pt')
    try:
        # A yaml's task is read from its head: forcing 'segment' would build a detect yaml as a
        # broken segmentation model that fails on its first frame with an unrelated message.
        model = YOLO(str(path) if path.exists() else name, task=None if is_yaml else 'segment')
    except Exception as error:  # ultralytics and torch raise many types for a bad model file
        if is_official_model_name(name) and not path.exists():
            raise SegmenterError(
                f"model '{name}' is not on this machine and could not be downloaded "
                f'({error.__class__.__name__}); offline, give a local model path, e.g. '
                f'{BUNDLED_MODEL}') from error
        raise SegmenterError(f"model '{name}' cannot be loaded: {error}") from error
    if model.task != 'segment':
        raise SegmenterError(
            f"model '{name}' is a {model.task} model, not a segmentation one (e.g. yolov8n-seg)")
    return model
