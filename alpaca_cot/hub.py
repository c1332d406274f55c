"""The Hugging Face hub, as the loaders see it: what counts as a hub id, and one clear line when the hub
cannot be reached (instead of the hub client's minute of retries).
"""

import os
import re
from pathlib import Path

from alpaca_cot.cli import UserError

HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def is_hub_id(name: str) -> bool:
    """org/name or a bare name (gpt2) that is not on this machine; org/name whose org is a local folder is
    a missing local path instead."""
    name = str(name)
    if Path(name).expanduser().exists() or not HUB_ID.fullmatch(name) or name.endswith((".json", ".gguf")):
        return False
    return "/" not in name or not Path(name.split("/")[0]).is_dir()


def hub_offline() -> bool:
    return any(os.environ.get(v, "").upper() in ("1", "ON", "YES", "TRUE") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def check_hub_reachable(name: str, timeout: float = 5.0, kind: str = "models"):
    """One line instead of the hub client's minute of retries when the hub cannot be reached (proxies honoured):
    one request, no retry. kind: models or datasets (the hub API's path for the id)."""
    if hub_offline() or (kind == "datasets" and os.environ.get("HF_DATASETS_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")):
        return
    import urllib.error
    import urllib.request

    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    try:
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/api/{kind}/{name}", method="HEAD"), timeout=timeout)
    except urllib.error.HTTPError:
        return  # the hub answered (a private or missing repo is reported when loading)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot reach the hub ({endpoint}) for {name}: {getattr(e, 'reason', e)}; if it is "
                        "already downloaded, set HF_HUB_OFFLINE=1 to use the cached copy") from None
