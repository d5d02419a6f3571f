"""While `serve data=library|beets` builds or updates a library's index, the address already answers: the page says
how far the indexing has come (songs done / total, songs per second, time left, from the folder's progress.json) and
opens the library as soon as it is ready. `Switch` is the ASGI app the server runs: the building page first, the
web app once the index is built."""

from __future__ import annotations

import html
import json

from siamrec.progress import read_progress

PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>siamrec: indexing your library</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:34rem;padding:0 1rem}
progress{width:100%;height:1.2rem}</style></head><body>
<h1>Indexing your library</h1><p>__FOLDER__</p>
<progress id="bar" max="1" value="0"></progress><p id="status">starting…</p>
<script>
function fmt(s){if(s==null)return "";s=Math.round(s);const h=Math.floor(s/3600),m=Math.floor(s%3600/60);
 return h?`${h} h ${m} min`:m?`${m} min ${s%60} s`:`${s} s`;}
async function poll(){
 try{const r=await fetch("/api/progress");
  if(r.ok){const p=await r.json();
   if(p.state==="ready"||p.serving){location.reload();return;}
   const bar=document.getElementById("bar");bar.max=Math.max(p.total||1,1);bar.value=p.done||0;
   let t=`${p.state}: ${p.done||0} / ${p.total||0} songs`;
   if(p.songs_per_s)t+=`, ${p.songs_per_s.toFixed(1)} songs/s`;if(p.eta_s!=null)t+=`, about ${fmt(p.eta_s)} left`;
   if(p.message)t+=` (${p.message})`;document.getElementById("status").textContent=t;}
 }catch(e){}
 setTimeout(poll,1000);}
poll();
</script></body></html>"""


class Switch:
    """An ASGI app that answers with the building page (and `/api/progress`) until `app` is set, then is `app`."""

    def __init__(self, folder):
        self.folder = folder
        self.app = None

    async def __call__(self, scope, receive, send):
        if self.app is not None:
            return await self.app(scope, receive, send)
        if scope["type"] == "lifespan":  # nothing to start: the web app is started by serve when the index is built
            while True:
                message = await receive()
                kind = message["type"].rsplit(".", 1)[-1]
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        if scope["type"] != "http":
            return
        path = scope.get("path", "/")
        if path == "/api/progress":
            body = json.dumps(read_progress(self.folder) or {"state": "scanning", "done": 0, "total": 0}).encode()
            status, kind = 200, b"application/json"
        elif path == "/" or path == "/index.html":
            body = PAGE.replace("__FOLDER__", html.escape(str(self.folder))).encode()
            status, kind = 200, b"text/html; charset=utf-8"
        else:
            body = json.dumps({"detail": "the library is still being indexed; try again when the page opens"}).encode()
            status, kind = 503, b"application/json"
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", kind), (b"cache-control", b"no-store"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
