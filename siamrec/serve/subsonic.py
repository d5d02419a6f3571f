"""OpenSubsonic sonic similarity: the Subsonic REST endpoints a client (or a Navidrome plugin) needs to get and play
playlists of the library from siamrec's embeddings, under /rest/ (with or without the `.view` suffix), GET or
POST (form) parameters, JSON (`f=json`) or XML (the default), as the Subsonic API answers:

ping, getLicense                      the server is alive
getOpenSubsonicExtensions             advertises `sonicSimilarity` (version 1)
getSonicSimilarTracks?id=&count=10    top-level `sonicMatch`: [{entry: <song>, similarity: 0..1}], radio rules applied
findSonicPath?startSongId=&endSongId=&count=25
                                      the start song, songs moving to the end song's sound, the end song (count in
                                      all), similarity to the start song
getSimilarSongs(2)?id=&count=50       `similarSongs(2)`: {song: [...]}, the same playlist
getSong?id=                           one song
stream?id=, download?id=              its audio (HTTP range requests)
search3?query=&songCount=&songOffset=&artistCount=&albumCount=...
                                      `searchResult3`: the artists, albums and songs whose names hold every word
                                      of the query (folded: case, accents), paged; an empty query lists all
getArtists                            `artists`: {ignoredArticles, index: [{name: A, artist: [...]}]}, by first letter
getArtist?id=, getAlbum?id=           an artist with its albums, an album with its songs (ID3 shapes)

Song ids are the app's ids (rows, as in /api/songs); artists (`ar-...`) and albums (`al-...`) are named by
their tags, the artist without case, accents or "feat. ..." as the radio rules compare it. Similarity is the cosine of the embeddings clipped to 0..1
(1: the same sound). Authentication: `u` with `t` = md5(password + `s`) or a plain (or `enc:`-hex) `p`, against
the environment variables SIAMREC_SUBSONIC_USER and SIAMREC_SUBSONIC_PASSWORD. When they are unset, a client on
this machine (127.0.0.1) needs no credentials and any other address gets Subsonic error 40; with
serve.allow_remote=true they must be set and given by every client.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from xml.etree import ElementTree as ET

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from siamrec.errors import SiamrecError
from siamrec.serve.catalogue import NATIVE, UnknownSong
from siamrec.songs import fold

API_VERSION = "1.16.1"
SERVER = {"type": "siamrec", "serverVersion": "1", "openSubsonic": True}
XMLNS = "http://subsonic.org/restapi"
USER_ENV, PASSWORD_ENV = "SIAMREC_SUBSONIC_USER", "SIAMREC_SUBSONIC_PASSWORD"
# Subsonic error codes
MISSING, WRONG_CREDENTIALS, NOT_FOUND, GENERIC = 10, 40, 70, 0


def _file_type(suffix: str) -> str | None:
    """The MIME type of a file the browser does not play as it is (Subsonic's contentType is the file's own)."""
    import mimetypes

    return (mimetypes.guess_type("x." + suffix)[0] or "application/octet-stream") if suffix else None


class SubsonicError(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def _is_loopback(host: str | None) -> bool:
    return bool(host) and (host in ("::1", "localhost") or host.startswith("127."))


def check_auth(params, client_host: str | None, allow_remote: bool) -> None:
    """Raise SubsonicError(40) unless the request may use the endpoints (see the module docstring)."""
    user, password = os.environ.get(USER_ENV), os.environ.get(PASSWORD_ENV)
    if not user or not password:
        if allow_remote:
            raise SubsonicError(WRONG_CREDENTIALS, f"serve.allow_remote=true: set {USER_ENV} and {PASSWORD_ENV} "
                                                   "for the Subsonic endpoints")
        if _is_loopback(client_host):
            return
        raise SubsonicError(WRONG_CREDENTIALS, f"only this machine may use these endpoints without credentials; "
                                               f"set {USER_ENV} and {PASSWORD_ENV} on the server")
    given_user = params.get("u")
    if not given_user:
        raise SubsonicError(MISSING, "Required parameter is missing: u")
    ok = False
    if params.get("t") and params.get("s"):
        expected = hashlib.md5((password + params["s"]).encode("utf-8")).hexdigest()
        ok = hmac.compare_digest(expected, params["t"].lower())
    elif params.get("p") is not None:
        given = params["p"]
        if given.startswith("enc:"):
            try:
                given = bytes.fromhex(given[4:]).decode("utf-8")
            except ValueError:
                given = None
        ok = given is not None and hmac.compare_digest(given.encode("utf-8"), password.encode("utf-8"))
    else:
        raise SubsonicError(MISSING, "Required parameter is missing: t and s, or p")
    if not (ok and hmac.compare_digest(given_user.encode("utf-8"), user.encode("utf-8"))):
        raise SubsonicError(WRONG_CREDENTIALS, "Wrong username or password")


def _xml(parent: ET.Element, name: str, value) -> None:
    """value as XML under parent: a dict becomes an element (scalars as attributes), a list repeated elements."""
    if isinstance(value, list):
        for v in value:
            _xml(parent, name, v)
        return
    el = ET.SubElement(parent, name)
    if isinstance(value, dict):
        _fill_xml(el, value)
    else:
        el.text = _scalar(value)


def _fill_xml(el: ET.Element, body: dict) -> None:
    for key, value in body.items():
        if value is None:
            continue
        if isinstance(value, (dict, list)):
            _xml(el, key, value)
        else:
            el.set(key, _scalar(value))


def _scalar(value) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def respond(fmt: str, body: dict | None = None, error: SubsonicError | None = None) -> Response:
    head = {"status": "failed" if error else "ok", "version": API_VERSION, **SERVER}
    if error:
        head["error"] = {"code": error.code, "message": error.message}
    head.update(body or {})
    if fmt == "json":
        return JSONResponse({"subsonic-response": head})
    root = ET.Element("subsonic-response", {"xmlns": XMLNS})
    _fill_xml(root, head)
    xml = b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="utf-8", xml_declaration=False)
    return Response(xml, media_type="application/xml; charset=utf-8")


def _short_id(prefix: str, text: str) -> str:
    return prefix + hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


class Shelf:
    """The library as a Subsonic client browses it: artists (by the normalised artist tag) and their albums
    (artist + album tag), each with its songs' rows in file order."""

    def __init__(self, songs, keys: list[str]):
        self.artists: dict[str, dict] = {}
        self.albums: dict[str, dict] = {}
        for r in sorted(range(len(keys)), key=keys.__getitem__):
            norm = songs.artist_norm[r]
            if not norm:
                continue
            artist = self.artists.setdefault(_short_id("ar-", norm), {"spellings": Counter(), "albums": []})
            artist["spellings"][songs.artists[r]] += 1
            if songs.albums[r]:
                aid = album_id(norm, songs.albums[r])
                if aid not in self.albums:
                    self.albums[aid] = {"name": songs.albums[r], "artistId": _short_id("ar-", norm), "rows": []}
                    artist["albums"].append(aid)
                self.albums[aid]["rows"].append(r)
        for artist in self.artists.values():  # its most common spelling ("A" rather than "A feat. Z")
            artist["name"] = min(artist.pop("spellings").items(), key=lambda kv: (-kv[1], len(kv[0]), kv[0]))[0]
        for album in self.albums.values():
            album["artist"] = self.artists[album["artistId"]]["name"]
        self.folded = {i: fold(a["name"]) for i, a in (*self.artists.items(), *self.albums.items())}

    def matching(self, ids, words: list[str]) -> list[str]:
        return [i for i in ids if all(w in self.folded[i] for w in words)]


def album_id(artist_norm: str, album: str) -> str:
    return _short_id("al-", f"{artist_norm}\0{album}")


def subsonic_router(cat, serve_cfg, rules) -> APIRouter:
    """The /rest/ endpoints over the app's catalogue `cat`, with the server's radio rules `rules` (or None)."""
    allow_remote = bool(serve_cfg.allow_remote)
    router = APIRouter(prefix="/rest", include_in_schema=False)
    meta = cat.radio_songs

    def row(params, name: str = "id") -> int:
        value = params.get(name)
        if value in (None, ""):
            raise SubsonicError(MISSING, f"Required parameter is missing: {name}")
        try:
            return cat.row(value)
        except UnknownSong:
            raise SubsonicError(NOT_FOUND, f"Song not found: {value}") from None

    def count(params, default: int) -> int:
        try:
            value = int(params.get("count", default))
        except ValueError:
            raise SubsonicError(GENERIC, f"count={params.get('count')!r}: must be an integer") from None
        return max(1, min(value, 500))

    def song(r: int) -> dict:
        path = cat.paths[r]
        suffix = Path(path).suffix.lower().lstrip(".")
        duration = meta.durations[r]
        entry = {"id": str(r), "isDir": False, "isVideo": False, "type": "music",
                 "title": meta.titles[r] or cat.names[r], "artist": meta.artists[r] or None,
                 "album": meta.albums[r] or None, "genre": cat.labels[r][0] if cat.labels[r] else None,
                 "duration": None if duration != duration else int(round(duration)), "path": cat.keys[r],
                 "suffix": suffix or None, "contentType": NATIVE.get("." + suffix) or _file_type(suffix),
                 "musicBrainzId": meta.mbids[r] or None}
        if cat.transcoded(r):  # streamed as WAV: the client is told, as Subsonic says, by these two
            entry.update({"transcodedSuffix": "wav", "transcodedContentType": "audio/wav"})
        if meta.artist_norm[r]:
            entry["artistId"] = _short_id("ar-", meta.artist_norm[r])
            if meta.albums[r]:
                entry["albumId"] = entry["parent"] = album_id(meta.artist_norm[r], meta.albums[r])
        return {k: v for k, v in entry.items() if v is not None}

    shelf: list[Shelf] = []  # made on the first browsing request
    created = datetime.fromtimestamp((cat.run / "items.csv").stat().st_mtime, timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%S.000Z")

    def library() -> Shelf:
        if not shelf:
            shelf.append(Shelf(meta, cat.keys))
        return shelf[0]

    def artist_entry(aid: str) -> dict:
        a = library().artists[aid]
        return {"id": aid, "name": a["name"], "albumCount": len(a["albums"])}

    def album_entry(aid: str) -> dict:
        a = library().albums[aid]
        seconds = meta.durations[a["rows"]]
        first = a["rows"][0]
        return {k: v for k, v in {
            "id": aid, "name": a["name"], "artist": a["artist"], "artistId": a["artistId"],
            "songCount": len(a["rows"]), "duration": int(round(float(seconds[seconds == seconds].sum()))),
            "created": created, "genre": cat.labels[first][0] if cat.labels[first] else None}.items() if v is not None}

    def found(p, shelf_ids) -> str:
        value = p.get("id")
        if value in (None, ""):
            raise SubsonicError(MISSING, "Required parameter is missing: id")
        if value not in shelf_ids:
            raise SubsonicError(NOT_FOUND, f"{'Artist' if value.startswith('ar-') else 'Album'} not found: {value}")
        return value

    def paged(p, name: str, default: int) -> tuple[int, int]:
        try:
            count, offset = int(p.get(f"{name}Count", default)), int(p.get(f"{name}Offset", 0))
        except ValueError:
            raise SubsonicError(GENERIC, f"{name}Count and {name}Offset must be integers") from None
        return max(0, min(count, 500)), max(0, offset)

    def similar(r: int, n: int) -> list[tuple[int, float]]:
        if rules is None:
            return [(e["id"], e["similarity"]) for e in cat.recommend([r], n)]
        entries, _note = cat.ruled([r], n, rules)
        return [(e["id"], e["similarity"]) for e in entries]

    def clip(similarity: float) -> float:
        return round(min(1.0, max(0.0, float(similarity))), 6)

    # ---------------------------------------------------------------- endpoints: params -> body
    def ping(_p):
        return {}

    def get_license(_p):
        return {"license": {"valid": True}}

    def extensions(_p):
        return {"openSubsonicExtensions": [{"name": "sonicSimilarity", "versions": [1]},
                                           {"name": "formPost", "versions": [1]}]}

    def sonic_similar(p):
        return {"sonicMatch": [{"entry": song(j), "similarity": clip(s)} for j, s in similar(row(p), count(p, 10))]}

    def sonic_path(p):
        a, b = row(p, "startSongId"), row(p, "endSongId")
        if a == b:
            return {"sonicMatch": [{"entry": song(a), "similarity": 1.0}]}
        k = min(count(p, 25) - 2, len(cat) - 2)
        steps = cat.radio.path(a, b, k, rules)[0] if k >= 1 else []
        ab = float(cat.radio.unit(a) @ cat.radio.unit(b))
        return {"sonicMatch": [{"entry": song(a), "similarity": 1.0}]
                + [{"entry": song(s["row"]), "similarity": clip(s["similarity_a"])} for s in steps]
                + [{"entry": song(b), "similarity": clip(ab)}]}

    def similar_songs(p, name="similarSongs"):
        return {name: {"song": [song(j) for j, _s in similar(row(p), count(p, 50))]}}

    def get_song(p):
        return {"song": song(row(p))}

    def search3(p):
        query = (p.get("query") or "").strip()
        if query in ('""', "''"):  # some clients send an empty query quoted: list everything
            query = ""
        words = fold(query).split()
        shelf_now = library()
        out = {}
        for name, ids, entry in (("artist", shelf_now.artists, artist_entry), ("album", shelf_now.albums, album_entry)):
            count, offset = paged(p, name, 20)
            hits = shelf_now.matching(ids, words)[offset:offset + count]
            if hits:
                out[name] = [entry(i) for i in hits]
        count, offset = paged(p, "song", 20)
        rows = cat.search(query, offset + count)[1][offset:] if count else []
        if rows:
            out["song"] = [song(r) for r in rows]
        return {"searchResult3": out}

    def get_artists(_p):
        by_letter: dict[str, list] = {}
        for aid, a in sorted(library().artists.items(), key=lambda kv: fold(kv[1]["name"])):
            first = fold(a["name"])[:1].upper()
            by_letter.setdefault(first if first.isalpha() else "#", []).append(artist_entry(aid))
        return {"artists": {"ignoredArticles": "", "index": [{"name": k, "artist": v} for k, v in by_letter.items()]}}

    def get_artist(p):
        aid = found(p, library().artists)
        return {"artist": {**artist_entry(aid), "album": [album_entry(a) for a in library().artists[aid]["albums"]]}}

    def get_album(p):
        aid = found(p, library().albums)
        return {"album": {**album_entry(aid), "song": [song(r) for r in library().albums[aid]["rows"]]}}

    def stream(p):
        r = row(p)
        try:
            kind, what = cat.audio(r)
        except UnknownSong:
            raise SubsonicError(NOT_FOUND, f"the audio of song {r} is not available") from None
        except SiamrecError as exc:
            raise SubsonicError(GENERIC, str(exc)) from None
        if kind == "file":
            return FileResponse(what, media_type=NATIVE.get(Path(what).suffix.lower(), "application/octet-stream"))
        return Response(what, media_type="audio/wav")

    endpoints = {"ping": ping, "getLicense": get_license, "getOpenSubsonicExtensions": extensions,
                 "getSonicSimilarTracks": sonic_similar, "findSonicPath": sonic_path,
                 "getSimilarSongs": similar_songs,
                 "getSimilarSongs2": lambda p: similar_songs(p, "similarSongs2"),
                 "getSong": get_song, "stream": stream, "download": stream, "search3": search3,
                 "getArtists": get_artists, "getArtist": get_artist, "getAlbum": get_album}
    open_endpoints = {"getOpenSubsonicExtensions"}  # the OpenSubsonic spec: answered without authentication

    def make(name, fn):
        async def endpoint(request: Request):
            params = dict(request.query_params)
            if request.method == "POST":
                form = await request.form()
                params.update({k: v for k, v in form.items() if isinstance(v, str)})
            fmt = "json" if params.get("f") == "json" else "xml"
            try:
                if name not in open_endpoints:
                    check_auth(params, request.client.host if request.client else None, allow_remote)
                result = fn(params)
            except SubsonicError as exc:
                return respond(fmt, error=exc)
            except SiamrecError as exc:
                return respond(fmt, error=SubsonicError(GENERIC, str(exc)))
            return result if isinstance(result, Response) else respond(fmt, result)

        return endpoint

    for name, fn in endpoints.items():
        handler = make(name, fn)
        for path in (f"/{name}", f"/{name}.view"):
            router.add_api_route(path, handler, methods=["GET", "POST"], name=f"subsonic {name} {path}")
    return router
