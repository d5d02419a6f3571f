"""The FastAPI app of `serve run=RUN`: one page (static/index.html, plain HTML + JS) and a JSON API.

GET  /api/songs                     the library (id, key, name, title, artist, album, duration, labels, group,
                                    playable; null when unknown)
GET  /api/search?q=TEXT             ids of the songs whose title, artist, album, labels or file name hold TEXT
                                    (case-, accent- and Unicode-form-insensitive)
GET  /api/recommend?seed=S&k=K      a playlist; S: an id, a key, or text naming one song (title, `artist - title`;
                                    409 with the candidates when it names several); repeatable ("more like these")
GET  /api/path?from=A&to=B&k=12     a song path from A's sound to B's
                                    (radio rules as query parameters of /api/recommend, /api/path, /api/export:
                                    siamrec.serve.radio; rules=false for the plain list)
/rest/...                           OpenSubsonic sonic similarity for Subsonic clients (siamrec.serve.subsonic)
POST /api/recommend                 JSON {"seeds": [...], "k": K, "exclude_group": false}, or multipart
                                    (file=<audio>, k=K): the playlist of a new song, embedded with the run's model
GET  /api/audio/{id}                a song's audio (HTTP range requests; formats browsers do not play: WAV)
GET  /api/cover/{id}                its cover art (embedded picture, else cover|folder|front.jpg beside it); 404 none
GET  /api/map                       the 2-D map (202 while it is being computed)
GET  /api/export?seed=ID&format=    the playlist as m3u8 (the seed first) | csv | json; POST for any list of ids
GET  /api/playlists                 the saved playlists (serve.playlists_dir); POST saves one as M3U8 there
Every error is a 4xx with one sentence in "detail". The OpenAPI page /docs is served from the installed
swagger-ui-py package (no internet); without it there is no /docs (the schema is at /openapi.json).
Songs are addressed by id (row) or key: a path in a request is never opened. Other routers (e.g. a Subsonic API)
are included in create_app with one `app.include_router(...)` line; they find the catalogue in app.state.
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

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from siamrec.data.audio import AUDIO_EXTENSIONS
from siamrec.errors import SiamrecError
from siamrec.rules import Rules, sound_note
from siamrec.serve.catalogue import EXPORT_FORMATS, NATIVE, Catalogue, PlaylistExists, UnknownSong
from siamrec.serve.map2d import MapCache
from siamrec.serve.radio import RULES_DOC, path_router, rules_query
from siamrec.serve.subsonic import subsonic_router
from siamrec.songs import Ambiguous

SILENT_DBFS = -60.0  # an upload quieter than this (RMS) is embedded but flagged as near-silent
SHORT_FRACTION = 0.9  # an upload shorter than this part of the model's window is embedded but flagged as short

STATIC = Path(__file__).resolve().parent / "static"


def plotly_js() -> Path | None:
    """plotly.min.js of the installed plotly package (served locally: the page needs no internet)."""
    try:
        import plotly
    except ImportError:
        return None
    path = Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"
    return path if path.is_file() else None


def swagger_assets() -> Path | None:
    """The folder of Swagger UI's JS and CSS shipped by the swagger-ui-py package (so /docs needs no internet)."""
    try:
        import swagger_ui
    except ImportError:
        return None
    folder = Path(swagger_ui.__file__).resolve().parent / "static"
    return folder if (folder / "swagger-ui-bundle.js").is_file() and (folder / "swagger-ui.css").is_file() else None


SongId = str | int  # JSON clients send ids as numbers or strings


class SeedsRequest(BaseModel):
    seeds: list[SongId] = Field(..., description="song ids (row numbers), keys or song titles; several: their "
                                                 "normalised mean", min_length=1, max_length=1000)
    k: int = 10
    exclude_group: bool = Field(False, description="leave out songs of the seeds' groups (artists)")
    rules: bool = Field(True, description="the server's radio rules (false: the plain nearest-neighbour list)")


class ExportItem(BaseModel):
    id: SongId
    similarity: float | None = 0.0


class ExportRequest(BaseModel):
    format: str = Field("m3u8", description="m3u8 | csv | json")
    seed_name: str = Field("playlist", max_length=1000)
    seed_labels: list[str] = []
    seeds: list[SongId] = Field([], description="the seed songs' ids: the first tracks of the M3U8", max_length=1000)
    items: list[ExportItem] = Field(..., max_length=100_000)


class SaveRequest(BaseModel):
    name: str = Field(..., description="the playlist's name (its file name in serve.playlists_dir)", max_length=200)
    ids: list[SongId] = Field(..., description="the songs in order, the seed first", min_length=1, max_length=100_000)
    overwrite: bool = False


def _readable(exc) -> str:
    """One sentence for FastAPI's (or pydantic's) list of validation errors."""
    parts = []
    for err in exc.errors()[:3]:
        where = ".".join(str(x) for x in err.get("loc", ()) if x not in ("query", "body", "path"))
        given = err.get("input")
        shown = f"={str(given)[:40]!r}" if isinstance(given, (str, int, float)) and where else ""
        parts.append(f"{where or 'the request'}{shown}: {err.get('msg', 'invalid').lower()}")
    return "; ".join(parts) or "invalid request"


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
    cat = catalogue or Catalogue(run, cfg.index, int(cfg.query_expansion))
    max_k = int(serve_cfg.max_k)
    max_upload_mb = float(serve_cfg.max_upload_mb)
    playlists_dir = Path(str(serve_cfg.playlists_dir or cat.run / "playlists")).expanduser()
    if not max_upload_mb > 0:
        raise SiamrecError(f"serve.max_upload_mb={max_upload_mb:g}: must be positive")
    max_upload = int(max_upload_mb * 1024 * 1024)
    server_rules = Rules.from_config(cfg.recommend.rules)
    off = sound_note(server_rules, cat.label_free)
    if off:
        print(off, flush=True)
    ruled = rules_query(server_rules)
    # new songs are decoded in this process (a worker pool per upload would cost more than the decoding)
    embed_cfg = OmegaConf.merge(cfg, {"features": {"workers": 0}})
    embed_lock = threading.Lock()
    the_map = MapCache(cat.run, cat.emb, str(serve_cfg.map), int(serve_cfg.map_max_items))
    plotly_path = plotly_js()
    swagger = swagger_assets()

    app = FastAPI(title="siamrec", version="1", docs_url=None, redoc_url=None,
                  description=f"Content-based playlists of run `{cat.run}` ({len(cat)} songs, "
                              f"{cat.index.method} search). Songs are addressed by id (row) or key.")
    app.state.catalogue, app.state.map, app.state.has_docs = cat, the_map, swagger is not None

    @app.exception_handler(SiamrecError)
    async def _user_error(_request, exc: SiamrecError):
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request, exc: RequestValidationError):
        return JSONResponse({"detail": _readable(exc)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request, exc: StarletteHTTPException):  # FastAPI's own 404/405 too: one sentence
        body = exc.detail if isinstance(exc.detail, dict) else {"detail": str(exc.detail)}
        return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    def short(text, n: int = 60) -> str:
        text = str(text)
        return text if len(text) <= n else f"{text[:n]}… ({len(text)} characters)"

    def row_of(song_id) -> int:
        try:
            return cat.row(song_id)
        except UnknownSong:
            raise HTTPException(404, f"no song with id {short(song_id)!r} in this library") from None

    def seed_row(seed) -> int:
        try:
            return cat.resolve(seed)
        except UnknownSong:
            raise HTTPException(404, f"no song with id, key or title {short(seed)!r} in this library") from None
        except Ambiguous as exc:
            raise HTTPException(409, {"detail": str(exc), "candidates": [cat.song(r) for r in exc.candidates[:50]]}) \
                from None

    def check_k(k: int) -> int:
        if not 1 <= k <= max_k:
            raise HTTPException(422, f"k={short(k, 20)}: the playlist length must be between 1 and {max_k}")
        return k

    # ------------------------------------------------------------------ page
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page():
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))

    @app.get("/docs", include_in_schema=False)
    def docs():
        """Swagger UI from the installed swagger-ui-py package: works offline."""
        if swagger is None:
            raise HTTPException(404, "no /docs: pip install swagger-ui-py (the API's schema is at /openapi.json)")
        from fastapi.openapi.docs import get_swagger_ui_html

        return get_swagger_ui_html(openapi_url="/openapi.json", title="siamrec API",
                                   swagger_js_url="/static/swagger-ui-bundle.js",
                                   swagger_css_url="/static/swagger-ui.css", swagger_favicon_url="data:,")

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str):
        files = {"app.js": (STATIC / "app.js", "text/javascript; charset=utf-8"),
                 "style.css": (STATIC / "style.css", "text/css; charset=utf-8")}
        if name == "plotly.min.js" and plotly_path is not None:
            return FileResponse(plotly_path, media_type="text/javascript; charset=utf-8")
        if name in ("swagger-ui-bundle.js", "swagger-ui.css") and swagger is not None:
            return FileResponse(swagger / name, media_type="text/javascript; charset=utf-8" if name.endswith(".js")
                                else "text/css; charset=utf-8")
        if name not in files:
            raise HTTPException(404, "not found")
        path, media = files[name]
        return FileResponse(path, media_type=media)

    @app.get("/api/info")
    def info():
        """The run, its size, the search method, whether it has groups, the default k and limits."""
        return {"run": str(cat.run), "songs": len(cat), "search": cat.index.method,
                "index_ready": cat.index_ready.is_set(), "has_groups": cat.has_groups,
                "k": int(serve_cfg.k), "max_k": max_k, "max_upload_mb": max_upload_mb,
                "playlists_dir": str(playlists_dir), "docs": swagger is not None,
                "map": plotly_path is not None, "can_embed": (cat.run / "backbone.keras").is_file(),
                "audio_extensions": list(AUDIO_EXTENSIONS)}

    # ------------------------------------------------------------------ library
    songs_json: dict[str, bytes] = {}  # encoded once (plain and gzip): the library does not change meanwhile

    @app.get("/api/songs")
    def songs(request: Request):
        """Every song of the library: id (row), key, name (`artist - title`, else the file stem), title, artist,
        album, duration (seconds; each null when unknown), labels, group, playable (native | wav | no)."""
        if not songs_json:
            songs_json["plain"] = JSONResponse(cat.songs()).body
            songs_json["gzip"] = gzip.compress(songs_json["plain"], compresslevel=5)
        if "gzip" in request.headers.get("accept-encoding", ""):
            return Response(songs_json["gzip"], media_type="application/json",
                            headers={"Content-Encoding": "gzip", "Vary": "Accept-Encoding"})
        return Response(songs_json["plain"], media_type="application/json", headers={"Vary": "Accept-Encoding"})

    @app.get("/api/search")
    def search(q: str = Query("", max_length=500), limit: int = Query(500, ge=1, le=100_000)):
        """{"total", "ids"}: the songs whose title, artist, album, labels or file name hold every word of q,
        compared case-, accent- and Unicode-form-insensitively (Gurmukhi and Devanagari as typed)."""
        total, ids = cat.search(q, limit)
        return {"total": total, "ids": ids}

    @app.get("/api/cover/{song_id}")
    def cover(song_id: str, missing: str = Query("404", description="404 | empty: answer 204 when there is none "
                                                                    "(the page: no error logged for a song without)")):
        """The song's cover art: a picture embedded in its tags, else cover.jpg|folder.jpg|front.jpg beside it."""
        found = cat.cover(row_of(song_id))
        if found is None and missing == "empty":
            return Response(status_code=204)
        if found is None:
            raise HTTPException(404, f"song {short(song_id)!r} has no cover art")
        data, mime = found
        if data == "file":
            return FileResponse(mime, headers={"Cache-Control": "max-age=3600"})
        return Response(data, media_type=mime, headers={"Cache-Control": "max-age=3600"})

    @app.get("/api/audio/{song_id}")
    def audio(song_id: str, request: Request):
        """The song's audio; supports HTTP range requests (206 + Content-Range). A format browsers do not play (AIFF,
        AU, WMA, WavPack, Monkey's Audio, Apple Lossless .m4a, ...) is sent as 16-bit WAV."""
        row = row_of(song_id)
        try:
            kind, what = cat.audio(row)
        except UnknownSong:
            raise HTTPException(404, f"the audio of song {song_id!r} is not available") from None
        if kind == "file":
            return FileResponse(what, media_type=NATIVE.get(Path(what).suffix.lower(), "application/octet-stream"))
        return _bytes_response(what, "audio/wav", request.headers.get("range"))

    # ------------------------------------------------------------------ playlists
    @app.get("/api/recommend", openapi_extra=RULES_DOC)
    async def recommend_get(seed: list[str] = Query(..., description="song id (row), key, title or `artist - title`; "
                                                                      "repeat for several seeds", max_length=1000),
                            k: int = 10, exclude_group: bool = False, rules: Rules | None = Depends(ruled)):
        """The k songs most similar to the seed(s), radio rules applied (`note` says when fewer than k pass);
        one seed gives `recommend run=RUN seed=SEED k=K`'s playlist. `k` in the answer is the length actually
        given (at most the number of other songs)."""
        # answered on the event loop: one search at a time (threads would only contend for the cores)
        return JSONResponse(_playlist([seed_row(s) for s in seed], check_k(k), exclude_group, rules))

    def _playlist(rows: list[int], k: int, exclude_group: bool, rules: Rules | None) -> dict:
        if rules is None:
            playlist, note = cat.recommend(rows, k, exclude_group), None
        else:
            playlist, note = cat.ruled(rows, k, rules, exclude_group)
        return {"seeds": [cat.song(r) for r in rows], "k": len(playlist), "k_asked": k,
                "exclude_group": exclude_group, "search": cat.index.method,
                "rules": rules.as_dict() if rules else None, "note": note, "playlist": playlist}

    @app.post("/api/recommend", openapi_extra=_MULTIPART_DOC)
    async def recommend_post(request: Request):
        """JSON {"seeds": [...], "k": K, "exclude_group": bool}: the playlist of several seeds (normalised mean of
        their embeddings). multipart/form-data with `file` (and `k`): the playlist of a new song."""
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("multipart/form-data"):
            return await _upload(request)
        try:
            body = SeedsRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            raise HTTPException(422, f"expected JSON {{\"seeds\": [...], \"k\": 10}} or a multipart upload: "
                                     f"{_readable(exc)}") from None
        return JSONResponse(_playlist([seed_row(s) for s in body.seeds], check_k(body.k), body.exclude_group,
                                      server_rules if body.rules else None))

    async def _upload(request: Request) -> dict:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > max_upload + 64 * 1024:
            raise HTTPException(413, f"the upload is larger than serve.max_upload_mb={max_upload_mb:g} MB")
        form = await request.form(max_files=1, max_fields=4)
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise HTTPException(422, "no file: send the audio as the form field 'file'")
        try:
            k = check_k(int(form.get("k") or serve_cfg.k))
        except (TypeError, ValueError):
            raise HTTPException(422, f"k={short(form.get('k'), 20)!r}: must be an integer") from None
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
            emb, warnings = await run_in_threadpool(_embed, target)
        except SiamrecError:
            raise HTTPException(422, f"{filename}: not audio siamrec can decode; upload one of "
                                     f"{', '.join(AUDIO_EXTENSIONS)}") from None
        finally:
            await upload.close()
            shutil.rmtree(tmp, ignore_errors=True)
        found = _new_song_playlist(emb, k)
        return {"seeds": [{"id": None, "key": filename, "name": Path(filename).stem, "title": None, "artist": None,
                           "album": None, "duration": None, "labels": [], "group": "", "playable": "no"}],
                "k": len(found["playlist"]), "k_asked": k, "exclude_group": False, "search": cat.index.method,
                "warnings": warnings, **found}

    def _new_song_playlist(emb, k: int) -> dict:
        if server_rules is None:
            return {"rules": None, "note": None, "playlist": cat.recommend_vector(emb, k)}
        playlist, note = cat.ruled([], k, server_rules, query=emb)
        return {"rules": server_rules.as_dict(), "note": note, "playlist": playlist}

    def _embed(path: Path) -> tuple:
        """The upload's embedding and its warnings: a near-silent or very short song is embedded but flagged."""
        from siamrec.embedder import embed_new_songs
        from siamrec.data.audio import AudioError, loudness

        if not (cat.run / "backbone.keras").is_file():
            raise HTTPException(422, f"run {cat.run} holds no audio model (backbone.keras), so it cannot embed "
                                     "new songs; serve a train run or an extract.out folder")
        try:
            seconds, dbfs = loudness(path)
        except AudioError as exc:
            raise SiamrecError(str(exc)) from None
        window = float(embed_cfg.clip.duration)
        warnings = []
        if seconds < SHORT_FRACTION * window:  # a few ms of padding say nothing; a window half silence does
            warnings.append(f"very short: {seconds:.1f} s of audio, less than the model's {window:g}-s window "
                            "(padded with silence), so its playlist may say little about it")
        if dbfs < SILENT_DBFS:
            level = "silent" if dbfs == float("-inf") else f"{dbfs:.0f} dBFS"
            warnings.append(f"near-silent: its level is {level}, so its playlist may say little about it")
        with embed_lock:
            return embed_new_songs(cat.run, [str(path)], embed_cfg)[0], warnings

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
    @app.get("/api/export", openapi_extra=RULES_DOC)
    def export_get(seed: list[str] = Query(..., max_length=1000), k: int = 10, exclude_group: bool = False,
                   format: str = "m3u8", rules: Rules | None = Depends(ruled)):
        """The playlist of the seed(s) as a file: m3u8 (the seeds first, then the playlist; absolute paths,
        #EXTINF seconds and `artist - title`, UTF-8), csv or json (with title, artist, album, duration)."""
        rows = [seed_row(s) for s in seed]
        result = _playlist(rows, check_k(k), exclude_group, rules)
        name = " + ".join(s["name"] for s in result["seeds"])
        labels = result["seeds"][0]["labels"] if len(result["seeds"]) == 1 else []
        return _export(result["playlist"], format, name, labels, rows)

    @app.post("/api/export")
    def export_post(body: ExportRequest):
        """Any list of songs (e.g. a new song's playlist shown on the page) as m3u8, csv or json; `seeds` (ids)
        open the M3U8."""
        entries = [{"id": row_of(it.id), "similarity": it.similarity} for it in body.items]
        return _export(entries, body.format, body.seed_name, body.seed_labels, [row_of(s) for s in body.seeds])

    def _export(entries, fmt: str, name: str, labels, seeds) -> Response:
        if fmt not in EXPORT_FORMATS:
            raise HTTPException(422, f"format={short(fmt, 20)!r}: choose m3u8, csv or json")
        text = cat.export(entries, fmt, name, labels, seeds)
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[:60] or "playlist"
        disposition = f"attachment; filename=\"{base}.{fmt}\"; filename*=UTF-8''{quote(name[:60])}.{fmt}"
        return Response(text.encode("utf-8"), media_type=EXPORT_FORMATS[fmt],
                        headers={"Content-Disposition": disposition})

    # ------------------------------------------------------------------ saved playlists
    @app.get("/api/playlists")
    def saved():
        """The playlists saved in serve.playlists_dir: name, file, ids (songs of this library, in order),
        missing (entries that are no song of it)."""
        return {"folder": str(playlists_dir), "playlists": cat.saved_playlists(playlists_dir)}

    @app.post("/api/playlists")
    def save(body: SaveRequest):
        """Save songs (the seed first) as NAME.m3u8 in serve.playlists_dir: the folder that
        `train +model=siamese data=playlists data.playlists=DIR` learns from. 409 when the name is taken
        (send overwrite=true to replace it)."""
        rows = [row_of(i) for i in body.ids]
        try:
            path = cat.save_playlist(playlists_dir, body.name, rows, body.overwrite)
        except PlaylistExists as exc:
            raise HTTPException(409, str(exc)) from None
        return {"name": path.stem, "file": path.name, "path": str(path), "songs": len(rows)}

    app.include_router(path_router(cat, ruled, seed_row, check_k))
    app.include_router(subsonic_router(cat, serve_cfg, server_rules))  # /rest/: OpenSubsonic sonic similarity
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
