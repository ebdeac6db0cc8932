"""A FastAPI app that records DataFast goals from its endpoints.

Run it (it needs ``pip install datafast-async fastapi uvicorn``)::

    DATAFAST_API_KEY=df_... python examples/fastapi_app.py

then, with the visitor id the DataFast script set in your browser::

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
        # VM of the README's "Performance" section (Python 3.13), validation included.
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
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=8000)
