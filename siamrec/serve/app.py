"""The FastAPI app of `serve run=RUN`: one page (static/index.html, plain HTML + JS) and a JSON API.

GET  /api/songs                     the library (id, key, name, labels, group, playable)
GET  /api/recommend?seed=ID&k=K     a playlist (seed repeatable: "more like these"; exclude_group=true)
POST /api/recommend                 JSON {"seeds": [...], "k": K, "exclude_group": false}, or multipart
                                    (file=<audio>, k=K): the playlist of a new song, embedded with the run's model
GET  /api/audio/{id}                a song's audio (HTTP range requests; .au/.aiff transcoded to WAV)
GET  /api/map                       the 2-D map (202 while it is being computed)
GET  /api/export?seed=ID&format=    the playlist as m3u8 | csv | json; POST /api/export for any list of ids
The OpenAPI page is /docs. Songs are addressed by id (row) or key only: a path in a request is never opened.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import tempfile
import threading
from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from siamrec.data.audio import AUDIO_EXTENSIONS
from siamrec.errors import SiamrecError
from siamrec.serve.catalogue import EXPORT_FORMATS, NATIVE, Catalogue, UnknownSong
from siamrec.serve.map2d import MapCache

STATIC = Path(__file__).resolve().parent / "static"


def plotly_js() -> Path | None:
    """plotly.min.js of the installed plotly package (served locally: the page needs no internet)."""
    try:
        import plotly
    except ImportError:
        return None
    path = Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"
    return path if path.is_file() else None


class SeedsRequest(BaseModel):
    seeds: list[str] = Field(..., description="song ids (row numbers) or keys; several: their normalised mean",
                             min_length=1)
    k: int = Field(10, ge=1)
    exclude_group: bool = Field(False, description="leave out songs of the seeds' groups (artists)")


class ExportItem(BaseModel):
    id: str
    similarity: float = 0.0


class ExportRequest(BaseModel):
    format: str = Field("m3u8", description="m3u8 | csv | json")
    seed_name: str = "playlist"
    seed_labels: list[str] = []
    items: list[ExportItem]


_MULTIPART_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": SeedsRequest.model_json_schema()},
            "multipart/form-data": {"schema": {
                "type": "object", "required": ["file"],
                "properties": {"file": {"type": "string", "format": "binary",
                                        "description": "an audio file outside the library (cold start)"},
                               "k": {"type": "integer", "default": 10}}}},
        },
    }
}


def create_app(run, cfg, catalogue: Catalogue | None = None) -> FastAPI:
    """The app over run folder `run` (cfg: the composed config: index, serve, clip, features)."""
    from omegaconf import OmegaConf

    serve_cfg = cfg.serve
    cat = catalogue or Catalogue(run, cfg.index)
    max_k = int(serve_cfg.get("max_k", 200))
    max_upload_mb = float(serve_cfg.get("max_upload_mb", 50))
    if not max_upload_mb > 0:
        raise SiamrecError(f"serve.max_upload_mb={max_upload_mb:g}: must be positive")
    max_upload = int(max_upload_mb * 1024 * 1024)
    # new songs are decoded in this process (a worker pool per upload would cost more than the decoding)
    embed_cfg = OmegaConf.merge(cfg, {"features": {"workers": 0}})
    embed_lock = threading.Lock()
    the_map = MapCache(cat.run, cat.emb, str(serve_cfg.get("map", "auto")), int(serve_cfg.get("map_max_items", 5000)))
    plotly_path = plotly_js()

    app = FastAPI(title="siamrec", version="1",
                  description=f"Content-based playlists of run `{cat.run}` ({len(cat)} songs, "
                              f"{cat.index.method} search). Songs are addressed by id (row) or key.")
    app.state.catalogue, app.state.map = cat, the_map

    @app.exception_handler(SiamrecError)
    async def _user_error(_request, exc: SiamrecError):
        return JSONResponse({"detail": str(exc)}, status_code=422)

    def row_of(song_id: str) -> int:
        try:
            return cat.row(song_id)
        except UnknownSong:
            raise HTTPException(404, f"no song with id {song_id!r} in this library") from None

    def check_k(k: int) -> int:
        if not 1 <= k <= max_k:
            raise HTTPException(422, f"k={k}: must be between 1 and {max_k}")
        return k

    # ------------------------------------------------------------------ page
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page():
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str):
        files = {"app.js": (STATIC / "app.js", "text/javascript; charset=utf-8"),
                 "style.css": (STATIC / "style.css", "text/css; charset=utf-8")}
        if name == "plotly.min.js" and plotly_path is not None:
            return FileResponse(plotly_path, media_type="text/javascript; charset=utf-8")
        if name not in files:
            raise HTTPException(404, "not found")
        path, media = files[name]
        return FileResponse(path, media_type=media)

    @app.get("/api/info")
    def info():
        """The run, its size, the search method, whether it has groups, the default k and limits."""
        return {"run": str(cat.run), "songs": len(cat), "search": cat.index.method,
                "index_ready": cat.index_ready.is_set(), "has_groups": cat.has_groups,
                "k": int(serve_cfg.get("k", 10)), "max_k": max_k, "max_upload_mb": max_upload_mb,
                "map": plotly_path is not None, "can_embed": (cat.run / "backbone.keras").is_file(),
                "audio_extensions": list(AUDIO_EXTENSIONS)}

    # ------------------------------------------------------------------ library
    songs_json: dict[str, bytes] = {}  # encoded once (plain and gzip): the library does not change meanwhile

    @app.get("/api/songs")
    def songs(request: Request):
        """Every song of the library: id (row), key, name, labels, group, playable (native | wav | no)."""
        if not songs_json:
            songs_json["plain"] = JSONResponse(cat.songs()).body
            songs_json["gzip"] = gzip.compress(songs_json["plain"], compresslevel=5)
        if "gzip" in request.headers.get("accept-encoding", ""):
            return Response(songs_json["gzip"], media_type="application/json",
                            headers={"Content-Encoding": "gzip", "Vary": "Accept-Encoding"})
        return Response(songs_json["plain"], media_type="application/json", headers={"Vary": "Accept-Encoding"})

    @app.get("/api/audio/{song_id}")
    def audio(song_id: str, request: Request):
        """The song's audio; supports HTTP range requests (206 + Content-Range). .au/.aiff are sent as WAV."""
        row = row_of(song_id)
        try:
            kind, what = cat.audio(row)
        except UnknownSong:
            raise HTTPException(404, f"the audio of song {song_id!r} is not available") from None
        if kind == "file":
            return FileResponse(what, media_type=NATIVE.get(Path(what).suffix.lower(), "application/octet-stream"))
        return _bytes_response(what, "audio/wav", request.headers.get("range"))

    # ------------------------------------------------------------------ playlists
    @app.get("/api/recommend")
    async def recommend_get(seed: list[str] = Query(..., description="song id (row) or key; repeat for several seeds"),
                      k: int = 10, exclude_group: bool = False):
        """The k songs most similar to the seed(s); one seed gives `recommend run=RUN seed=SEED k=K`'s playlist."""
        # answered on the event loop: one search at a time (threads would only contend for the cores)
        return JSONResponse(_playlist([row_of(s) for s in seed], check_k(k), exclude_group))

    def _playlist(rows: list[int], k: int, exclude_group: bool) -> dict:
        return {"seeds": [cat.song(r) for r in rows], "k": k, "exclude_group": exclude_group,
                "search": cat.index.method, "playlist": cat.recommend(rows, k, exclude_group)}

    @app.post("/api/recommend", openapi_extra=_MULTIPART_DOC)
    async def recommend_post(request: Request):
        """JSON {"seeds": [...], "k": K, "exclude_group": bool}: the playlist of several seeds (normalised mean of
        their embeddings). multipart/form-data with `file` (and `k`): the playlist of a new song."""
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("multipart/form-data"):
            return await _upload(request)
        try:
            body = SeedsRequest.model_validate_json(await request.body())
        except ValueError as exc:
            raise HTTPException(422, f"expected JSON {{\"seeds\": [...], \"k\": 10}} or a multipart upload: "
                                     f"{str(exc).splitlines()[0]}") from None
        return JSONResponse(_playlist([row_of(s) for s in body.seeds], check_k(body.k), body.exclude_group))

    async def _upload(request: Request) -> dict:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > max_upload + 64 * 1024:
            raise HTTPException(413, f"the upload is larger than serve.max_upload_mb={max_upload_mb:g} MB")
        form = await request.form(max_files=1, max_fields=4)
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise HTTPException(422, "no file: send the audio as the form field 'file'")
        try:
            k = check_k(int(form.get("k") or serve_cfg.get("k", 10)))
        except ValueError:
            raise HTTPException(422, f"k={form.get('k')!r}: must be an integer") from None
        filename = os.path.basename(upload.filename or "upload")
        suffix = Path(filename).suffix.lower()
        suffix = suffix if re.fullmatch(r"\.[a-z0-9]{1,5}", suffix) and suffix[1:] in AUDIO_EXTENSIONS else ""
        tmp = tempfile.mkdtemp(prefix="siamrec-upload-")
        try:
            target = Path(tmp) / f"upload{suffix}"
            size = 0
            with open(target, "wb") as out:
                while chunk := await upload.read(1 << 20):
                    size += len(chunk)
                    if size > max_upload:
                        raise HTTPException(413, f"{filename}: larger than serve.max_upload_mb="
                                                 f"{max_upload_mb:g} MB")
                    out.write(chunk)
            if size == 0:
                raise HTTPException(422, f"{filename}: the file is empty")
            emb = await run_in_threadpool(_embed, target)
        except SiamrecError:
            raise HTTPException(422, f"{filename}: not audio siamrec can decode; upload one of "
                                     f"{', '.join(AUDIO_EXTENSIONS)}") from None
        finally:
            await upload.close()
            shutil.rmtree(tmp, ignore_errors=True)
        return {"seeds": [{"id": None, "key": filename, "name": Path(filename).stem, "labels": [], "group": "",
                           "playable": "no"}],
                "k": k, "exclude_group": False, "search": cat.index.method,
                "playlist": cat.recommend_vector(emb, k)}

    def _embed(path: Path):
        from siamrec.embedder import embed_new_songs

        if not (cat.run / "backbone.keras").is_file():
            raise HTTPException(422, f"run {cat.run} holds no audio model (backbone.keras), so it cannot embed "
                                     "new songs; serve a train run or an extract.out folder")
        with embed_lock:
            return embed_new_songs(cat.run, [str(path)], embed_cfg)[0]

    # ------------------------------------------------------------------ map
    @app.get("/api/map")
    def map2d():
        """{"method", "x", "y"} in library order once computed; 202 {"status": "computing"} before."""
        the_map.start()
        if the_map.error:
            raise HTTPException(500, the_map.error)
        if the_map.xy is None:
            return JSONResponse({"status": "computing", "method": the_map.method}, status_code=202)
        xy = the_map.xy
        return {"status": "ready", "method": the_map.method, "x": xy[:, 0].round(5).tolist(),
                "y": xy[:, 1].round(5).tolist()}

    # ------------------------------------------------------------------ export
    @app.get("/api/export")
    def export_get(seed: list[str] = Query(...), k: int = 10, exclude_group: bool = False, format: str = "m3u8"):
        """The playlist of the seed(s) as a file: m3u8 (absolute paths, UTF-8), csv or json."""
        result = _playlist([row_of(s) for s in seed], check_k(k), exclude_group)
        name = " + ".join(s["name"] for s in result["seeds"])
        labels = result["seeds"][0]["labels"] if len(result["seeds"]) == 1 else []
        return _export(result["playlist"], format, name, labels)

    @app.post("/api/export")
    def export_post(body: ExportRequest):
        """Any list of songs (e.g. a new song's playlist shown on the page) as m3u8, csv or json."""
        entries = [{"id": row_of(it.id), "similarity": it.similarity} for it in body.items]
        return _export(entries, body.format, body.seed_name, body.seed_labels)

    def _export(entries, fmt: str, name: str, labels) -> Response:
        if fmt not in EXPORT_FORMATS:
            raise HTTPException(422, f"format={fmt!r}: choose m3u8, csv or json")
        text = cat.export(entries, fmt, name, labels)
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[:60] or "playlist"
        disposition = f"attachment; filename=\"{base}.{fmt}\"; filename*=UTF-8''{quote(name[:60])}.{fmt}"
        return Response(text.encode("utf-8"), media_type=EXPORT_FORMATS[fmt],
                        headers={"Content-Disposition": disposition})

    return app


def _bytes_response(data: bytes, media_type: str, range_header: str | None) -> Response:
    """`data` whole (200) or the one byte range asked for (206 + Content-Range; 416 when unsatisfiable)."""
    size = len(data)
    headers = {"Accept-Ranges": "bytes"}
    if not range_header:
        return Response(data, media_type=media_type, headers=headers)
    m = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", range_header)
    if not m or (m.group(1) == "" and m.group(2) == ""):
        return Response(status_code=416, headers={**headers, "Content-Range": f"bytes */{size}"})
    if m.group(1) == "":  # the last N bytes
        start, end = max(0, size - int(m.group(2))), size - 1
    else:
        start = int(m.group(1))
        end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
    if start >= size or start > end:
        return Response(status_code=416, headers={**headers, "Content-Range": f"bytes */{size}"})
    headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    return Response(data[start:end + 1], status_code=206, media_type=media_type, headers=headers)
