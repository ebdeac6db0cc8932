"""A FastAPI app that records DataFast goals from its endpoints.

Run it (it needs ``pip install datafast-async fastapi uvicorn``) against DataFast::

    DATAFAST_API_KEY=df_... python examples/fastapi_app.py

or, with no account and no network, against the fake DataFast server that comes with the
package: start it in one terminal (it prints each goal it accepts), the app in another::

    datafast-async fake-server
    DATAFAST_BASE_URL=http://127.0.0.1:8787 DATAFAST_API_KEY=df_test \\
        python examples/fastapi_app.py

It listens on 127.0.0.1:8000; for another port, pass it (``python examples/fastapi_app.py
8001``) or set ``PORT=8001``. Then, with the visitor id the DataFast script set in your
browser (the fake server takes any)::

    curl -X POST localhost:8000/signup -H 'Content-Type: application/json' \\
        -d '{"email": "ada@example.com", "plan": "pro"}' \\
        --cookie 'datafast_visitor_id=<the visitor id>'
    curl localhost:8000/report.csv --cookie 'datafast_visitor_id=<the visitor id>'
"""

from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel

from datafast_async import DataFast
from datafast_async.starlette import get_client, lifespan, visitor_id

# The app's client (started at start-up, closed and flushed at shutdown) and the visitor's id
# (the datafast_visitor_id cookie, or None), as FastAPI dependencies.
DataFastDep = Annotated[DataFast, Depends(get_client)]
VisitorId = Annotated[str | None, Depends(visitor_id)]

router = APIRouter()


class Signup(BaseModel):
    email: str
    plan: str = "free"


@router.post("/signup")
async def signup(form: Signup, df: DataFastDep, vid: VisitorId) -> dict[str, bool]:
    # ... create the account ...
    if vid:
        # Validates now and queues, never waits on the network: about 1.8 µs on the 2-core
        # VM of docs/performance.md (Python 3.13), validation included.
        await df.track(vid, "signup", metadata={"plan": form.plan})
    return {"ok": True}


@router.get("/report.csv", response_class=PlainTextResponse)
def report(df: DataFastDep, vid: VisitorId) -> str:
    # A plain `def` endpoint runs in FastAPI's thread pool: use track_nowait, which is safe
    # from any thread (it hands the goal to the client's event loop).
    csv = "month,signups\n2025-01,42\n"  # ... blocking work: a database query, a file ...
    if vid:
        df.track_nowait(vid, "report_download", metadata={"format": "csv"})
    return csv


def create_app(datafast: DataFast | None = None) -> FastAPI:
    """The app; ``datafast=None`` builds ``DataFast()`` from the environment at start-up."""
    app = FastAPI(lifespan=lifespan(datafast))
    app.include_router(router)
    return app


app = create_app()

if __name__ == "__main__":
    import os
    import sys

    import uvicorn

    # The port: the first argument, else $PORT, else 8000.
    port = int(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("PORT", "8000"))
    uvicorn.run(app, host="127.0.0.1", port=port)
