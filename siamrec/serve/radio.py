"""The radio rules as query parameters of the web API, and the song path A → B (`GET /api/path`).

`rules_query(base)` is a FastAPI dependency: the server's `recommend.rules` with any rule given in the query
string changed (`rules=false` for the plain nearest-neighbour list). `path_router` serves

GET /api/path?from=A&to=B&k=12   A, then k songs moving from A's sound to B's, then B; each with its similarity
                                 to its step's point, to A and to B (radio rules applied, as for playlists).
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Query

from siamrec.errors import SiamrecError
from siamrec.rules import Rules


def rules_query(base: Rules | None):
    """A dependency giving the rules of one request (None: no rules)."""

    def rules(
        rules: bool | None = Query(None, description="radio rules on (default: the server's recommend.rules) or "
                                                      "off (false: the plain nearest-neighbour list)"),
        max_per_artist: int | None = Query(None, ge=1, description="at most this many songs of one artist"),
        album_gap: int | None = Query(None, ge=0, description="two songs of one album more than this many places "
                                                              "apart (0: off)"),
        dedupe: bool | None = Query(None, description="no second version of a song or of the seed"),
        dup_distance: float | None = Query(None, ge=0, lt=1, description="near-identical sound: cosine distance"),
        dup_distance_artist: float | None = Query(None, ge=0, lt=1, description="the same, for one artist's songs"),
        labels: list[str] | None = Query(None, description="only songs with one of these labels (repeatable)"),
        min_duration: float | None = Query(None, ge=0, description="seconds"),
        max_duration: float | None = Query(None, ge=0, description="seconds"),
        exclude: list[str] | None = Query(None, description="songs (id, key, title, 'artist - title') or artists "
                                                            "never to play (repeatable)"),
    ) -> Rules | None:
        if rules is False or (rules is None and base is None):
            return None
        try:
            return (base or Rules()).replace(
                max_per_artist=max_per_artist, album_gap=album_gap, dedupe=dedupe, dup_distance=dup_distance,
                dup_distance_artist=dup_distance_artist,
                labels=labels, min_duration=min_duration, max_duration=max_duration, exclude=exclude)
        except SiamrecError as exc:
            raise HTTPException(422, str(exc).replace("recommend.rules.", "")) from None

    return rules


def path_router(cat, rules_dep, row_of, check_k) -> APIRouter:
    from fastapi import Depends

    router = APIRouter()

    @router.get("/api/path")
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
