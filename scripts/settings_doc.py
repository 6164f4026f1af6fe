"""Write docs/settings.md from the settings declarations (vae_cli/settings.py).

tests/test_settings.py fails when the file is stale; run `python scripts/settings_doc.py`.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vae_cli.settings import markdown_table  # noqa: E402

if __name__ == "__main__":
    path = ROOT / "docs" / "settings.md"
    path.write_text(markdown_table())
    print(f"wrote {path}")
