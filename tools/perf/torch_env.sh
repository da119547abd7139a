# Sourced by the perf scripts (run from the repository root): the PyTorch venv and the
# random SD 1.5 UNet they share. Nothing is written outside the paths given.

# ensure_torch_venv VENV: a venv with PyTorch + diffusers from PyPI (~3 GB), made once.
ensure_torch_venv() {
    local venv=$1
    if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import torch, diffusers' 2>/dev/null; then
        echo "making $venv (PyTorch + diffusers from PyPI)" >&2
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check torch diffusers transformers safetensors
    fi
}

# ensure_sd15_unet PYTHON DIR: SD 1.5's UNet with random weights (3.4 GB) and inputs at
# 256–1024 px, made once by tools/perf/unet_torch.py.
ensure_sd15_unet() {
    local py=$1 data=$2
    if [ ! -f "$data/config.json" ] || [ ! -f "$data/inputs.safetensors" ]; then
        "$py" tools/perf/unet_torch.py make "$data" --sizes 256 512 768 1024
    fi
}
