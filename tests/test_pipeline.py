"""The request pipeline every service runs (services/pipeline.py), tested once, in process: an ASGI transport and a
fake model, so limits, options, admission, concurrency and error mapping are checked without starting a server."""

from __future__ import annotations

import asyncio
import base64
import time

import httpx
import numpy as np
import pytest
from pydantic import BaseModel, Field

from services.pipeline import CommonArgs, Files, Options, Prepared, Route, TaskService, make_app
from tasks.images import ImageLimits, decode_image
from tests.conftest import png_bytes


class FakeOptions(Options):
    scale: int = Field(1, ge=1, le=10, description="multiplies the answer")
    label: bool = Field(False, description="add a label")


class FakeResponse(BaseModel):
    values: list[float]
    label: str | None = None
    model: str
    backend: str
    elapsed_ms: float


ONE = Route("/one", "one image", Files("image"), FakeOptions, FakeResponse)
MANY = Route("/many", "many images", Files("images", many=True), FakeOptions, FakeResponse)


class FakeArgs(CommonArgs):
    max_images: int = 8


class Fake(TaskService):
    """A model whose answer for an image is its mean pixel value: each request can tell whether it got its own."""

    task = "fake"
    routes = (ONE, MANY)

    def __init__(self, delay_s: float = 0.0, fail: bool = False, **args: object) -> None:
        self.args = FakeArgs(**args)
        self.delay_s, self.fail, self.calls = delay_s, fail, []
        self.body_limit = int(self.args.max_body_mb * 1024 * 1024)
        self.tag, self.backend_name, self.threads = "fake:1", "fake/cpu", 2
        self.start_pipeline()
        self.serve_self()

    def warm_up(self) -> None:
        pass

    def run(self, x: np.ndarray) -> np.ndarray:
        self.calls.append(len(x))
        time.sleep(self.delay_s)
        if self.fail:
            raise RuntimeError("the fake model failed")
        return x.reshape(len(x), -1).mean(1)

    def max_files(self) -> int:
        return self.args.max_images

    def prepare(self, route, inputs, options: FakeOptions, budget) -> Prepared:
        images = [np.asarray(decode_image(u.data, ImageLimits(min_side=2), budget=budget)) for u in inputs]
        x = np.stack([im[:2, :2].astype(np.float32) for im in images])
        return Prepared(x, len(x))

    def finish(self, route, prepared, out, options: FakeOptions) -> dict:
        return {"values": [float(v) * options.scale for v in out], "label": "yes" if options.label else None}


def client_for(service: Fake) -> httpx.AsyncClient:
    app = make_app("fake", "a fake task", (ONE, MANY), current=lambda: service)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test", timeout=30)


def flat(value: int, size: int = 8) -> bytes:
    return png_bytes(np.full((size, size, 3), value, np.uint8))


def run(coro):
    return asyncio.run(coro)


def test_concurrent_requests_each_get_their_own_answer():
    service = Fake(delay_s=0.005)

    async def main():
        async with client_for(service) as c:
            sends = [c.post("/one", files={"image": ("a.png", flat(v))}) for v in range(40)]
            return await asyncio.gather(*sends)

    answers = run(main())
    assert [r.status_code for r in answers] == [200] * 40
    assert [r.json()["values"] for r in answers] == [[float(v)] for v in range(40)]
    assert max(service.calls) > 1  # they did share model calls
    assert all(r.json()["model"] == "fake:1" for r in answers)


def test_options_come_from_the_query_or_the_body_and_are_checked():
    service = Fake()

    async def main():
        async with client_for(service) as c:
            image = base64.b64encode(flat(3)).decode()
            query = await c.post("/one?scale=2&label=true", files={"image": ("a.png", flat(3))})
            body = await c.post("/one?scale=2", json={"image": image, "scale": 5})
            form = await c.post("/one", files={"image": ("a.png", flat(3))}, data={"scale": "4"})
            unknown = await c.post("/one?scael=2", files={"image": ("a.png", flat(3))})
            bad = await c.post("/one", json={"image": image, "scale": 11})
            typed = await c.post("/one", json={"image": image, "label": "maybe"})
            return query, body, form, unknown, bad, typed

    query, body, form, unknown, bad, typed = run(main())
    assert query.json()["values"] == [6.0] and query.json()["label"] == "yes"
    assert body.json()["values"] == [15.0]  # the body wins over the query
    assert form.json()["values"] == [12.0]
    assert unknown.status_code == 422 and "scael" in unknown.json()["error"] and "scale" in unknown.json()["error"]
    assert bad.status_code == 422 and "scale" in bad.json()["error"]
    assert typed.status_code == 422 and "label" in typed.json()["error"]


def test_the_openapi_page_documents_what_the_parser_accepts():
    app = make_app("fake", "a fake task", (ONE, MANY), current=lambda: None)
    spec = app.openapi()
    for route in (ONE, MANY):
        op = spec["paths"][route.path]["post"]
        assert {p["name"] for p in op["parameters"]} == set(FakeOptions.model_fields)
        for ctype in ("multipart/form-data", "application/json"):
            props = op["requestBody"]["content"][ctype]["schema"]["properties"]
            assert set(props) == {route.payload.field, *FakeOptions.model_fields}
        scale = next(p for p in op["parameters"] if p["name"] == "scale")["schema"]
        assert (scale["minimum"], scale["maximum"], scale["default"]) == (1, 10, 1)
        assert "503" in op["responses"] and "413" in op["responses"]
    assert "image/png" in spec["paths"]["/one"]["post"]["requestBody"]["content"]


def test_body_limits_files_and_the_decoded_budget():
    service = Fake(max_body_mb=0.05, max_images=3, max_request_pixels=150)

    async def main():
        async with client_for(service) as c:
            big = await c.post("/one", content=b"x" * 60_000, headers={"content-type": "image/png"})
            files = [("images", (f"{i}.png", flat(i))) for i in range(4)]
            many = await c.post("/many", files=files)
            budget = await c.post("/many", files=[("images", (f"{i}.png", flat(i))) for i in range(3)])  # 3 x 64 px
            ok = await c.post("/many", files=[("images", (f"{i}.png", flat(i))) for i in range(3)][:2])
            ctype = await c.post("/one", content=b"{}", headers={"content-type": "text/csv"})
            broken = await c.post("/one", content=b"--x\r\nnot a form", headers={"content-type": "multipart/form-data"})
            return big, many, budget, ok, ctype, broken

    big, many, budget, ok, ctype, broken = run(main())
    assert big.status_code == 413 and "limit" in big.json()["error"]
    assert many.status_code == 413 and "3" in many.json()["error"]
    assert budget.status_code == 413 and "max_request_pixels" in budget.json()["error"], budget.text
    assert ok.status_code == 200 and ok.json()["values"] == [0.0, 1.0]
    assert ctype.status_code == 415 and broken.status_code == 400


def test_a_failing_model_answers_500_with_a_message_and_the_service_goes_on():
    service = Fake(fail=True)

    async def main():
        async with client_for(service) as c:
            failed = await c.post("/one", files={"image": ("a.png", flat(1))})
            service.fail = False
            ok = await c.post("/one", files={"image": ("a.png", flat(1))})
            return failed, ok

    failed, ok = run(main())
    assert failed.status_code == 500 and "error" in failed.json()
    assert "fake model failed" not in failed.text  # internals stay in the server log
    assert ok.status_code == 200


def test_past_the_latency_budget_requests_get_503_at_once_and_the_admitted_ones_succeed():
    """A model call of 40 ms one item at a time, a budget of 0.2 s: at 60 concurrent requests (~12x what the
    budget holds) the excess is refused within 100 ms with Retry-After, and every admitted request succeeds."""
    service = Fake(delay_s=0.04, max_batch_size=1, latency_budget_s=0.2)

    async def one(c: httpx.AsyncClient) -> tuple[int, float, str | None]:
        start = time.perf_counter()
        r = await c.post("/one", files={"image": ("a.png", flat(7))})
        return r.status_code, time.perf_counter() - start, r.headers.get("retry-after")

    async def main():
        async with client_for(service) as c:
            await one(c)  # the model's call time is learnt from its first call
            return await asyncio.gather(*(one(c) for _ in range(60)))

    results = run(main())
    statuses = [s for s, _, _ in results]
    assert set(statuses) <= {200, 503} and statuses.count(200) >= 4 and statuses.count(503) >= 30, statuses
    refused = [(t, ra) for s, t, ra in results if s == 503]
    assert all(t < 0.1 for t, _ in refused), max(t for t, _ in refused)
    assert all(ra is not None and int(ra) >= 1 for _, ra in refused)
    # about as many admitted as the budget holds (0.2 s / 40 ms = 5, give or take the call in progress), and
    # those finish about within it (generously: other processes share this machine's cores)
    assert statuses.count(200) <= 12
    served = sorted(t for s, t, _ in results if s == 200)
    assert served[len(served) // 2] < 0.5 and served[-1] < 1.0


@pytest.mark.parametrize("budget_s", [0.5])
def test_admission_never_refuses_what_the_budget_can_hold(budget_s):
    """Eight concurrent requests on a model of 10 ms a call fit in a budget of 0.5 s: none is refused."""
    service = Fake(delay_s=0.01, max_batch_size=1, latency_budget_s=budget_s)

    async def main():
        async with client_for(service) as c:
            await c.post("/one", files={"image": ("a.png", flat(1))})
            return await asyncio.gather(*(c.post("/one", files={"image": ("a.png", flat(1))}) for _ in range(8)))

    assert [r.status_code for r in run(main())] == [200] * 8


def test_multipart_other_files_are_skipped_and_repeated_fields_refused():
    service = Fake()

    async def main():
        async with client_for(service) as c:
            other = await c.post("/one", files=[("junk", ("j.bin", b"x" * 1000)), ("image", ("a.png", flat(5)))])
            twice = await c.post("/one", files={"image": ("a.png", flat(5))}, data={"scale": ["2", "3"]})
            return other, twice

    other, twice = run(main())
    assert other.status_code == 200 and other.json()["values"] == [5.0]
    assert twice.status_code == 422 and "more than once" in twice.json()["error"]


def test_threads_follow_the_cgroup_cpu_quota(tmp_path):
    from services.backends import _v1, _v2

    assert _v2("250000 100000\n", "") == 2.5 and _v2("max 100000\n", "") is None
    (tmp_path / "cpu.cfs_period_us").write_text("100000\n")
    assert _v1("200000\n", str(tmp_path / "cpu.cfs_quota_us")) == 2.0
    assert _v1("-1\n", str(tmp_path / "cpu.cfs_quota_us")) is None


def test_malformed_json_values_are_400s_that_say_why():
    """Nesting past Python's recursion limit, numbers of thousands of digits, base64 wrapped at 76 columns (as
    the ``base64`` tool writes it: accepted), and bodies large enough to be parsed off the event loop."""
    service = Fake()
    image = flat(7)
    wrapped = base64.encodebytes(image).decode()  # line breaks every 76 characters
    assert "\n" in wrapped

    async def main():
        async with client_for(service) as c:
            js = {"content-type": "application/json"}
            deep = await c.post("/one", content=b'{"image": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", headers=js)
            digits = await c.post("/one", content=b'{"image": "", "scale": ' + b"9" * 5000 + b"}", headers=js)
            lines = await c.post("/one", json={"image": wrapped})
            crlf = await c.post("/one", json={"image": wrapped.replace("\n", "\r\n")})
            spaces = await c.post("/one", json={"image": wrapped.replace("\n", " ")})
            large = await c.post("/many", json={"images": [wrapped] * 4, "pad": "x" * 200_000})
            return deep, digits, lines, crlf, spaces, large

    deep, digits, lines, crlf, spaces, large = run(main())
    assert deep.status_code == 400 and "nested too deep" in deep.json()["error"]
    assert digits.status_code == 400 and "5000 digits" in digits.json()["error"]
    assert lines.status_code == crlf.status_code == 200 and lines.json()["values"] == [7.0]
    assert spaces.status_code == 400 and "base64" in spaces.json()["error"]
    assert large.status_code == 422 and "pad" in large.json()["error"]  # parsed (on a thread), then the option


def test_text_must_be_unicode_scalar_values():
    from services.http import check_text
    from services.pipeline import _text_of
    from tasks.images import InputError

    assert check_text("한국어 text") == "한국어 text"
    with pytest.raises(InputError, match=r"lone surrogate \(U\+D800\) at character 4"):
        _text_of(b'{"text": "abc \\ud800 def"}', True, "text")
    assert _text_of(b'{"text": "pair \\ud83d\\ude00"}', True, "text")[0] == "pair \U0001f600"  # a pair is fine


class Versioned(Fake):
    """The fake model loadable from a (fake) store entry: each version a replica with its own model object."""

    requires = ()

    def load_model(self, entry) -> None:
        self.model = Weights()


class Weights:
    """Stands for a loaded model (weakly referenceable: the test sees when the last reference goes)."""


def fake_entry(tag: str):
    from types import SimpleNamespace

    return SimpleNamespace(tag=tag, info=SimpleNamespace(metadata={"files": {}}))


def test_a_swap_keeps_requests_on_their_version_and_releases_the_old_one_after_its_last_request():
    import weakref

    service = Versioned(delay_s=0.3)
    versions = service.versions
    two = service.replica(fake_entry("fake:2"))
    versions.install(two, "fake:2", 1)
    two_model = weakref.ref(two.model)
    del two

    async def main():
        async with client_for(service) as c:
            slow = asyncio.create_task(c.post("/one", files={"image": ("a.png", flat(7))}))
            await asyncio.sleep(0.1)  # inside fake:2's model call
            versions.install(service.replica(fake_entry("fake:3")), "fake:3", 2)
            assert two_model() is not None  # still answering
            after = await c.post("/one", files={"image": ("b.png", flat(8))})
            return await slow, after

    slow, after = run(main())
    assert slow.status_code == 200 and slow.json()["model"] == "fake:2" and slow.json()["values"] == [7.0]
    assert after.status_code == 200 and after.json()["model"] == "fake:3" and after.json()["values"] == [8.0]
    assert two_model() is None  # released with its last request, without waiting for a garbage collection
    assert versions.serving.tag == "fake:3" and versions.serving.inflight == 0
    versions.stop()
