"""Where the project's own files are, independent of the working directory."""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = PROJECT_ROOT / "config"
SAMPLE_DATA_DIR = PROJECT_ROOT / "signalgen" / "sample_data"
