"""Write the Sphinx inventories the docs link Python, PyTorch and JAX names with.

The docs build reads tools/docs/inventories/*.inv from disk, so that it needs no network
and links the same way every time. mkdocs.yml names them with ``file:`` addresses relative
to itself, and loads this file as a hook: ``on_config`` turns those addresses into absolute
ones before mkdocstrings reads them, so ``mkdocs build -f path/to/mkdocs.yml`` works from
any folder (a relative ``file:`` address would be read from the working directory). MkDocs
caches what it reads for a day (~/.cache/mkdocs/mkdocs_url_cache), by address; the
absolute address ends with a digest of the file (``#sha256=...``, a fragment, which reading
the file ignores), so a refreshed inventory is read at the next build.

- ``python.inv`` is CPython 3.11's own inventory (from Debian's python3.11-doc package);
  the site links it to https://docs.python.org/3/.
- ``torch.inv`` and ``jax.inv`` are small inventories this script writes, of the names
  the docs refer to; their addresses follow those projects' documentation layout and were
  written by hand, without the network to check them from here.

``python tools/docs/inventories.py`` rewrites torch.inv and jax.inv from the lists below.
``python tools/docs/inventories.py --download`` replaces all three with the projects'
complete inventories, on a machine that can reach their sites.
"""

from __future__ import annotations

import argparse
import hashlib
import urllib.request
import zlib
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent / "inventories"
OFFICIAL = {
    "python.inv": "https://docs.python.org/3/objects.inv",
    "torch.inv": "https://docs.pytorch.org/docs/stable/objects.inv",
    "jax.inv": "https://docs.jax.dev/en/latest/objects.inv",
}
# name, role, address relative to the project's documentation root ("$" = the name)
TORCH = (
    ("torch.Tensor", "class", "tensors.html#$"),
    ("torch.device", "class", "tensor_attributes.html#$"),
    ("torch.utils.data.DataLoader", "class", "data.html#$"),
    ("torch.utils.data.Dataset", "class", "data.html#$"),
    ("torch.utils.data.IterableDataset", "class", "data.html#$"),
    ("torch.utils.data.distributed.DistributedSampler", "class", "data.html#$"),
    ("torch.distributed.init_process_group", "function", "distributed.html#$"),
    ("torch.distributed.all_reduce", "function", "distributed.html#$"),
    ("torch.Tensor.record_stream", "method", "generated/torch.Tensor.record_stream.html#$"),
    ("torch.cuda.Stream", "class", "generated/torch.cuda.Stream.html#$"),
    ("torch.cuda.Stream.wait_stream", "method", "generated/torch.cuda.Stream.html#$"),
)
JAX = (
    ("jax.device_put", "function", "_autosummary/jax.device_put.html#$"),
    (
        "jax.make_array_from_process_local_data",
        "function",
        "_autosummary/jax.make_array_from_process_local_data.html#$",
    ),
    ("jax.distributed.initialize", "function", "_autosummary/jax.distributed.initialize.html#$"),
    (
        "jax.experimental.multihost_utils.process_allgather",
        "function",
        "_autosummary/jax.experimental.multihost_utils.process_allgather.html#$",
    ),
    ("jax.sharding.Sharding", "class", "jax.sharding.html#$"),
    ("jax.sharding.NamedSharding", "class", "jax.sharding.html#$"),
    ("jax.sharding.Mesh", "class", "jax.sharding.html#$"),
    ("jax.sharding.PartitionSpec", "class", "jax.sharding.html#$"),
)


def sphinx_inventory(project: str, version: str, items: tuple[tuple[str, str, str], ...]) -> bytes:
    """An ``objects.inv`` (Sphinx inventory version 2) holding ``items``."""
    header = (
        "# Sphinx inventory version 2\n"
        f"# Project: {project}\n"
        f"# Version: {version}\n"
        "# The remainder of this file is compressed using zlib.\n"
    )
    body = "".join(f"{name} py:{role} 1 {uri} -\n" for name, role, uri in items)
    return header.encode() + zlib.compress(body.encode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--download", action="store_true", help="fetch the full inventories")
    args = parser.parse_args()
    HERE.mkdir(exist_ok=True)
    if args.download:
        for name, url in OFFICIAL.items():
            with urllib.request.urlopen(url, timeout=60) as response:
                (HERE / name).write_bytes(response.read())
            print(f"{HERE / name}: downloaded from {url}")
        return
    (HERE / "torch.inv").write_bytes(sphinx_inventory("PyTorch", "2.13", TORCH))
    (HERE / "jax.inv").write_bytes(sphinx_inventory("JAX", "latest", JAX))
    print(f"wrote {HERE / 'torch.inv'} ({len(TORCH)} names), {HERE / 'jax.inv'} ({len(JAX)})")


def on_config(config: Any) -> None:
    """MkDocs hook: make mkdocstrings' relative ``file:`` inventory addresses absolute
    (relative to mkdocs.yml), with the file's digest as a fragment (see the module's
    docstring). Runs before mkdocstrings' own ``on_config``, which starts reading them."""
    root = Path(config.config_file_path).resolve().parent
    handlers = config.plugins["mkdocstrings"].config["handlers"]
    for inventory in handlers["python"]["inventories"]:
        url = inventory["url"]
        if url.startswith("file:") and not url.startswith("file:/"):
            path = root / url.removeprefix("file:")
            digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
            inventory["url"] = f"{path.as_uri()}#sha256={digest}"


# What mkdocs.plugins.event_priority(100) sets, without importing MkDocs here: MkDocs runs
# the on_config of higher priority first, and mkdocstrings' has the default, 0.
on_config.mkdocs_priority = 100  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
