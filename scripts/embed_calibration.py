"""Put a refitted calibration into a model file that is already exported.

    python scripts/embed_calibration.py MODEL.pt [--calibration JSON]

``scripts/export_encoder.py`` embeds ``inference/models/<name>.calibration.json``
when it exports a trained run; this puts a newer one into the file as it stands
(the same graph and weights, byte for byte in its tensors), so a calibration
refitted after the run's checkpoint is gone still reaches the runtime. The JSON
defaults to the one beside the model (``<name>.calibration.json``). The old and
new calibrations are printed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from synesthete.errors import ModelError
from synesthete.inference.torchscript import METADATA_FILE, read_metadata


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", type=Path, help="an exported model file")
    parser.add_argument("--calibration", type=Path, default=None, help="calibration JSON")
    args = parser.parse_args(argv)
    try:
        metadata = read_metadata(args.model)
    except ModelError as err:
        print(f"embed_calibration: {err}", file=sys.stderr)
        return 2
    source = args.calibration or args.model.with_name(f"{metadata['name']}.calibration.json")
    try:
        calibration = json.loads(source.read_text())
    except (OSError, json.JSONDecodeError) as err:
        print(f"embed_calibration: cannot read {source}: {err}", file=sys.stderr)
        return 2
    if not isinstance(calibration, dict):
        print(f"embed_calibration: {source} is not a JSON object", file=sys.stderr)
        return 2
    print(f"was: {json.dumps(metadata.get('calibration'))}")
    metadata["calibration"] = calibration
    module = torch.jit.load(str(args.model), map_location="cpu")  # type: ignore[no-untyped-call]
    tmp = args.model.with_suffix(args.model.suffix + ".tmp")
    torch.jit.save(module, str(tmp), _extra_files={METADATA_FILE: json.dumps(metadata, indent=2)})
    tmp.replace(args.model)
    print(f"now: {json.dumps(read_metadata(args.model)['calibration'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
