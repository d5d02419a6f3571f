"""The beets plugin `siamrec` (installed as `beetsplug.siamrec` with `pip install "siamrec[beets]"`; enable it with
`plugins: siamrec` in beets' config).

    beet similar QUERY [-n 10] [--m3u FILE] [--index DIR]

prints (or writes as an M3U8 playlist) the songs most like the first item matching QUERY, from the index that
`python -m siamrec extract data=beets` built for this beets library (its default folder, or `--index DIR`, or
`siamrec: {index: DIR}` in beets' config). The seed opens the playlist. The source lives in siamrec/beetsplug/
and is mapped to the `beetsplug` namespace by setuptools (package-dir in pyproject.toml): no beetsplug/__init__.py
is shipped, so beets' own namespace stays whole.
"""

from __future__ import annotations

import os
from pathlib import Path

from beets import ui
from beets.plugins import BeetsPlugin


class SiamrecPlugin(BeetsPlugin):
    def __init__(self):
        super().__init__()
        self.config.add({"index": None, "number": 10})

    def commands(self):
        cmd = ui.Subcommand("similar", help="songs most like the first item matching QUERY (siamrec)")
        cmd.parser.usage += " QUERY"
        cmd.parser.add_option("-n", "--number", type="int", default=None, help="how many songs (default 10)")
        cmd.parser.add_option("--m3u", metavar="FILE", help="write the playlist to FILE (M3U8) instead of printing")
        cmd.parser.add_option("--index", metavar="DIR", help="the siamrec index folder (default: this library's)")
        cmd.func = self.similar
        return [cmd]

    def index_folder(self, lib, opts) -> Path:
        given = opts.index or self.config["index"].get()
        if given:
            return Path(os.path.expanduser(str(given)))
        from omegaconf import OmegaConf

        from siamrec.data.music import library_folder

        return library_folder(OmegaConf.create({"source": "beets", "library": os.fsdecode(lib.path), "query": None}))

    def similar(self, lib, opts, args):
        from siamrec.errors import SiamrecError

        if not args:
            raise ui.UserError("beet similar QUERY: name a song, e.g. beet similar title:ਮਿੱਟੀ")
        n = opts.number if opts.number is not None else int(self.config["number"].get())
        if n < 1:
            raise ui.UserError(f"-n {n}: must be at least 1")
        seed = next(iter(lib.items(args)), None)
        if seed is None:
            raise ui.UserError(f"no item matches {' '.join(args)!r}")
        folder = self.index_folder(lib, opts)
        try:
            rows = similar_rows(folder, os.fsdecode(seed.path), n)
        except SiamrecError as exc:
            raise ui.UserError(str(exc)) from None
        if opts.m3u:
            from siamrec.m3u import write_m3u8  # siamrec's one M3U8 writer: atomic, no line injected by a name

            try:
                write_m3u8(Path(opts.m3u).expanduser(), rows)
            except SiamrecError as exc:  # a full or read-only disk: one line
                raise ui.UserError(str(exc)) from None
            ui.print_(f"{len(rows) - 1} songs like {rows[0]['artist']} - {rows[0]['title']} written to {opts.m3u}")
            return
        for rank, row in enumerate(rows):
            mark = "seed" if rank == 0 else f"{rank:3d}."
            ui.print_(f"{mark} {row['artist']} - {row['album']} - {row['title']}"
                      + ("" if rank == 0 else f"  ({row['similarity']:+.3f})"))


def default_expansion() -> int:
    """siamrec's `query_expansion` as shipped (conf/config.yaml): the one place its default lives."""
    from siamrec.configs import compose

    return int(compose("recommend", [], return_hydra_config=False).query_expansion)


def similar_rows(folder: Path, seed_path: str, n: int) -> list[dict]:
    """The seed's items.csv row, then its n most similar songs' rows (with 'similarity'), from the index `folder`."""
    import numpy as np

    from siamrec.errors import SiamrecError
    from siamrec.index import ExactIndex
    from siamrec.runs import printable, read_embeddings

    if not (folder / "items.csv").is_file():
        raise SiamrecError(f"no siamrec index in {folder}; build it with: python -m siamrec extract data=beets "
                           "(or pass --index DIR)")
    emb, items = read_embeddings(folder)
    rows = {it["key"]: i for i, it in enumerate(items)}
    row = rows.get(printable(seed_path))
    if row is None:
        raise SiamrecError(f"{seed_path} is not in the index {folder}; update it with: python -m siamrec extract "
                           "data=beets")
    k = min(n, len(items) - 1)
    index = ExactIndex(emb).with_expansion(default_expansion())  # ranked as `python -m siamrec recommend` ranks
    idx, sims = index.search(index.expanded(emb[[row]], np.array([row])), k, exclude=np.array([row]))
    return [dict(items[row], similarity=1.0)] + [dict(items[j], similarity=float(s)) for j, s in zip(idx[0], sims[0])]
