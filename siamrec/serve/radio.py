"""The radio rules as query parameters of the web API, and the song path A → B (`GET /api/path`).

`rules_query(base)` is a FastAPI dependency: the server's `recommend.rules` with any rule given in the query
string changed (`rules=false` for the plain nearest-neighbour list). `path_router` serves

GET /api/path?from=A&to=B&k=12   A, then k songs moving from A's sound to B's, then B; each with its similarity
                                 to its step's point, to A and to B (radio rules applied, as for playlists).
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Query, Request

from siamrec.errors import SiamrecError
from siamrec.rules import Rules

# the rules a request may change: name -> (type, OpenAPI schema, description); parsed from the query string by
# rules_query and documented by RULES_DOC (FastAPI's own parameter machinery cost ~0.4 ms on every playlist request)
RULE_PARAMS = {
    "rules": (bool, {"type": "boolean"}, "radio rules on (default: the server's recommend.rules) or off (false: the "
                                         "plain nearest-neighbour list)"),
    "max_per_artist": (int, {"type": "integer", "minimum": 1}, "at most this many songs of one artist"),
    "album_gap": (int, {"type": "integer", "minimum": 0}, "two songs of one album more than this many places apart "
                                                          "(0: off)"),
    "dedupe": (bool, {"type": "boolean"}, "no second version of a song or of the seed"),
    "dup_distance": (float, {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
                     "near-identical sound: cosine distance"),
    "dup_distance_artist": (float, {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
                            "the same, for one artist's songs"),
    "dup_on_trained": (bool, {"type": "boolean"}, "the two distances on an embedding trained on labels too"),
    "labels": (list, {"type": "array", "items": {"type": "string"}}, "only songs with one of these labels (repeatable)"),
    "min_duration": (float, {"type": "number", "minimum": 0}, "seconds"),
    "max_duration": (float, {"type": "number", "minimum": 0}, "seconds"),
    "exclude": (list, {"type": "array", "items": {"type": "string"}},
                "songs (id, key, title, 'artist - title') or artists never to play (repeatable)"),
}
RULES_DOC = {"parameters": [{"name": name, "in": "query", "required": False, "schema": schema, "description": text}
                            for name, (_, schema, text) in RULE_PARAMS.items()]}
_TRUE, _FALSE = {"true", "1", "yes", "on", "t", "y"}, {"false", "0", "no", "off", "f", "n"}


def _value(name: str, kind, text: str):
    """A query parameter's value as its rule's type, or a 422 naming it."""
    try:
        if kind is bool:
            low = text.strip().lower()
            if low in _TRUE | _FALSE:
                return low in _TRUE
            raise ValueError
        return kind(text)
    except ValueError:
        what = {bool: "true or false", int: "an integer", float: "a number"}[kind]
        raise HTTPException(422, f"{name}={text!r}: must be {what}") from None


def rules_query(base: Rules | None):
    """A dependency giving the rules of one request (None: no rules): the server's `base` with the rules given in
    the query string changed (RULE_PARAMS; each checked by Rules.replace)."""

    async def rules(request: Request) -> Rules | None:
        query = request.query_params
        given = {}
        for name in query.keys() & RULE_PARAMS.keys():
            kind = RULE_PARAMS[name][0]
            given[name] = query.getlist(name) if kind is list else _value(name, kind, query.getlist(name)[-1])
        on = given.pop("rules", None)
        if on is False or (on is None and base is None):
            return None
        try:
            return (base or Rules()).replace(**given)
        except SiamrecError as exc:
            raise HTTPException(422, str(exc).replace("recommend.rules.", "")) from None

    return rules


def path_router(cat, rules_dep, row_of, check_k) -> APIRouter:
    from fastapi import Depends

    router = APIRouter()

    @router.get("/api/path", openapi_extra=RULES_DOC)
    async def song_path(start: str = Query(..., alias="from", description="song A: id (row) or key"),
                        to: str = Query(..., description="song B: id (row) or key"), k: int = 12,
                        rules: Rules | None = Depends(rules_dep)):
        """A, then k songs moving in even steps from A's sound to B's, then B: each step is the song nearest to
        a point on the line between the two embeddings (not used before, radio rules applied), shown with its
        similarity to A and to B."""
        a, b = row_of(start), row_of(to)
        if a == b:
            raise HTTPException(422, "from and to are the same song: choose two songs")
        k = min(check_k(k), len(cat) - 2)
        if k < 1:
            raise HTTPException(422, "the library has no songs between these two")
        steps, note = cat.radio.path(a, b, k, rules)
        ua, ub = cat.radio.unit(a), cat.radio.unit(b)
        ab = round(float(ua @ ub), 6)
        path = [{**cat.song(a), "step": 0, "similarity": 1.0, "similarity_a": 1.0, "similarity_b": ab}]
        path += [{**cat.song(s["row"]), "step": i, "similarity": s["similarity"], "similarity_a": s["similarity_a"],
                  "similarity_b": s["similarity_b"]} for i, s in enumerate(steps, start=1)]
        path.append({**cat.song(b), "step": len(steps) + 1, "similarity": 1.0, "similarity_a": ab,
                     "similarity_b": 1.0})
        return {"from": cat.song(a), "to": cat.song(b), "k": k, "rules": rules.as_dict() if rules else None,
                "note": note, "path": path}

    return router
