"""On PYTHONPATH, this makes `import torch` fail: tests/test_cli.py runs every script with it and a misspelled
flag, and the one-line flag error must still come out, so no script imports torch before its flags are checked."""

import sys


class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch was imported before the flags were checked")
        return None


sys.meta_path.insert(0, _NoTorch())
