"""Zero-shot chat runs against a chat server of the tests' own on 127.0.0.1.

The server speaks the OpenAI chat-completions format and follows a scripted
behaviour per test (a fair answerer, a malformed first answer, an id always
left out, a refused key), so the whole path runs for real: prompt, HTTP,
strict parsing, retries and the records in a real store.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import sparse

from scdrugmap import Store
from scdrugmap.cli import main
from scdrugmap.zeroshot.client import ChatClient, ChatError, endpoint_url, public_url
from scdrugmap.zeroshot.parse import parse_answer
from scdrugmap.zeroshot.prompt import build_messages, top_gene_indices
from scdrugmap.zeroshot.run import ZeroShotSettings, run_zeroshot
from tests.store_builders import synthetic_store
from tests.synthetic import PROGRAMME

KEY = "sk-test-secret-4242"
CELL_LINE = re.compile(r"^(c\d+): (.*)$", re.MULTILINE)

Behaviour = Callable[[dict, dict, int], tuple[int, dict, str]]


# the chat server -----------------------------------------------------------------


def completion(content: str) -> tuple[int, dict, str]:
    body = {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
    }
    return 200, {}, json.dumps(body)


def sent_cells(request: dict) -> list[tuple[str, list[str]]]:
    """(id, genes) of each cell in the request's user message."""
    user = request["messages"][-1]["content"]
    cells_part = user.split("Cells:\n", 1)[1]
    return [(m.group(1), m.group(2).split()) for m in CELL_LINE.finditer(cells_part)]


def marker_call(genes: list[str]) -> str:
    """The fair answerer's rule: resistant cells over-express the programme genes."""
    return "resistant" if sum(g in PROGRAMME for g in genes[:10]) >= 4 else "sensitive"


def fair_answer(request: dict) -> str:
    answers = [{"id": i, "response": marker_call(g)} for i, g in sent_cells(request)]
    return json.dumps({"answers": answers})


class ChatServer:
    def __init__(self) -> None:
        self.behaviour: Behaviour = lambda request, headers, n: completion(fair_answer(request))
        self.requests: list[tuple[dict, dict]] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                request = json.loads(self.rfile.read(length))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with server.lock:
                    server.requests.append((request, headers))
                    n = len(server.requests)
                if self.path != "/v1/chat/completions":
                    status, extra, body = 404, {}, '{"error": {"message": "not found"}}'
                else:
                    status, extra, body = server.behaviour(request, headers, n)
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in extra.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def chat() -> Iterator[ChatServer]:
    server = ChatServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def template_store(tmp_path_factory) -> Path:
    """Two data sets of 60 cells (30 sensitive, 30 resistant), built once."""
    return synthetic_store(tmp_path_factory.mktemp("zeroshot"), cells_per_sample=15).path


@pytest.fixture
def store(template_store: Path, tmp_path: Path) -> Store:
    target = tmp_path / "store"
    shutil.copytree(template_store, target)
    return Store(target)


def client_for(server: ChatServer, **options) -> ChatClient:
    return ChatClient(server.url, "test-model", KEY, timeout=5, sleep=lambda s: None, **options)


def table_count(store: Store, table: str) -> int:
    return int(store.query(f"SELECT count(*) AS n FROM {table}")["n"].iloc[0])


# prompt ---------------------------------------------------------------------------


def test_top_genes_by_decreasing_count_ties_by_column_order() -> None:
    counts = sparse.csr_matrix(
        np.array([[0, 5, 1, 5, 9], [0, 0, 0, 0, 0], [3, 0, 0, 0, 1]], dtype=np.float32)
    )
    tops = top_gene_indices(counts, 3)
    assert [t.tolist() for t in tops] == [[4, 1, 3], [], [0, 4]]
    # The same cells chunked differently give the same genes.
    assert top_gene_indices(counts[2:], 3)[0].tolist() == [0, 4]


def test_prompt_states_drug_cancer_type_ids_genes_and_the_json_form() -> None:
    messages = build_messages(
        ["c1", "c2"],
        [["EGFR", "KRAS"], []],
        drug="erlotinib",
        cancer_type="lung adenocarcinoma",
        tissue="cell line",
        n_genes=50,
    )
    assert [m["role"] for m in messages] == ["system", "user"]
    user = messages[1]["content"]
    assert "lung adenocarcinoma (cell line) treated with erlotinib" in user
    assert "c1: EGFR KRAS\nc2: (no expressed genes)" in user
    assert "these 2 ids: c1, c2" in user
    assert '{"answers": [{"id": "c1", "response": "sensitive"}' in user
    unknown = build_messages(["c1"], [["A"]], drug=None, cancer_type=float("nan"), n_genes=5)
    assert "study of cancer cells treated with the drug" in unknown[1]["content"]


# parser ---------------------------------------------------------------------------


def answer(*pairs: tuple[str, object]) -> str:
    return json.dumps({"answers": [{"id": i, "response": r} for i, r in pairs]})


def test_parser_accepts_exact_answers_any_case_and_one_code_fence() -> None:
    parsed = parse_answer(answer(("c1", " Sensitive"), ("c2", "RESISTANT")), ["c1", "c2"])
    assert parsed.calls == {"c1": 1, "c2": 0} and parsed.failures == {}
    fenced = "```json\n" + answer(("c1", "resistant")) + "\n```"
    assert parse_answer(fenced, ["c1"]).calls == {"c1": 0}


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("c1: sensitive", "not JSON"),
        ("Sure! " + answer(("c1", "sensitive"), ("c2", "sensitive")), "not JSON"),
        ('[{"id": "c1", "response": "sensitive"}]', 'list "answers"'),
        ('{"answers": ["c1 sensitive"]}', 'string "id"'),
        (answer(("c1", "sensitive"), ("c2", "sensitive"), ("c9", "resistant")), "'c9'"),
    ],
)
def test_parser_rejects_the_whole_answer_for_structural_faults(text: str, reason: str) -> None:
    parsed = parse_answer(text, ["c1", "c2"])
    assert parsed.calls == {}
    assert set(parsed.failures) == {"c1", "c2"}
    assert all(reason in r for r in parsed.failures.values())


def test_parser_rejects_only_the_cells_at_fault() -> None:
    text = answer(
        ("c1", "sensitive"),
        ("c2", "likely sensitive"),
        ("c3", "resistant"),
        ("c3", "sensitive"),
        ("c4", None),
        ("c6", "resistant"),
    )
    parsed = parse_answer(text, ["c1", "c2", "c3", "c4", "c5", "c6"])
    assert parsed.calls == {"c1": 1, "c6": 0}
    assert parsed.failures == {
        "c2": 'response "likely sensitive" is not sensitive or resistant',
        "c3": "2 answers for this cell",
        "c4": "response null is not sensitive or resistant",
        "c5": "no answer for this cell",
    }


# client ---------------------------------------------------------------------------


def test_endpoint_and_public_url() -> None:
    assert endpoint_url("http://h:8/v1/") == "http://h:8/v1/chat/completions"
    assert endpoint_url("http://h/v1/chat/completions") == "http://h/v1/chat/completions"
    assert public_url("https://u:pw@h:9/v1/chat/completions?key=x") == (
        "https://h:9/v1/chat/completions"
    )
    with pytest.raises(ChatError, match="must start with http"):
        endpoint_url("h/v1")


def test_client_sends_the_key_as_bearer_and_never_shows_it(chat: ChatServer) -> None:
    client = client_for(chat)
    assert client.complete([{"role": "user", "content": "hi\nCells:\nc1: A"}])
    request, headers = chat.requests[0]
    assert headers["authorization"] == f"Bearer {KEY}"
    assert request["model"] == "test-model" and request["temperature"] == 0.0
    assert KEY not in repr(client)


def test_client_honours_retry_after_then_succeeds(chat: ChatServer) -> None:
    def busy_once(request, headers, n):
        if n == 1:
            return 429, {"Retry-After": "7"}, '{"error": {"message": "slow down"}}'
        return completion("ok")

    waits: list[float] = []
    chat.behaviour = busy_once
    client = ChatClient(chat.url, "m", KEY, timeout=5, sleep=waits.append)
    assert client.complete([]) == "ok"
    assert waits == [7.0]


def test_client_gives_up_after_bounded_retries_on_5xx(chat: ChatServer) -> None:
    chat.behaviour = lambda request, headers, n: (503, {}, f"overloaded {KEY}")
    waits: list[float] = []
    client = ChatClient(chat.url, "m", KEY, retries=2, backoff=0.5, sleep=waits.append)
    with pytest.raises(ChatError) as error:
        client.complete([])
    assert len(chat.requests) == 3 and waits == [0.5, 1.0]
    message = str(error.value)
    assert "HTTP 503" in message and "after 3 attempts" in message
    assert f"{chat.url}/chat/completions" in message and KEY not in message


def test_client_reports_connection_refused() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = ChatClient(f"http://127.0.0.1:{port}/v1", "m", KEY, retries=1, sleep=lambda s: None)
    with pytest.raises(ChatError, match=r"failed after 2 attempts \(unreachable"):
        client.complete([])


def test_client_does_not_retry_a_bad_request(chat: ChatServer) -> None:
    chat.behaviour = lambda request, headers, n: (
        400,
        {},
        '{"error": {"message": "model nope does not exist"}}',
    )
    with pytest.raises(ChatError, match=r"HTTP 400: .*model nope does not exist.*--model"):
        client_for(chat).complete([])
    assert len(chat.requests) == 1


# runs -----------------------------------------------------------------------------


def test_run_records_calls_metrics_and_no_key(chat: ChatServer, store: Store) -> None:
    record = run_zeroshot(store, client_for(chat), settings=ZeroShotSettings(batch_size=16))
    assert record.n_cells == 120 and record.n_unclassified == 0
    run = store.runs().iloc[-1]
    assert (run["kind"], run["embedding"], run["classifier"], run["split"]) == (
        "zeroshot",
        "text:test-model",
        "chat-zeroshot",
        "zero-shot",
    )
    assert run["n_folds"] == 1 and "120 of 120 cells classified" in run["note"]
    assert "hard calls" in run["note"]
    # Every request holds cells of one data set, at most batch-size of them.
    for request, _ in chat.requests:
        assert 1 <= len(sent_cells(request)) <= 16
        assert "treated with drugA" in request["messages"][1]["content"] or (
            "treated with drugB" in request["messages"][1]["content"]
        )
    predictions = store.query("SELECT * FROM predictions")
    assert len(predictions) == 120
    assert set(predictions["prob_sensitive"]) <= {0.0, 1.0}
    assert (predictions["predicted"] == predictions["prob_sensitive"]).all()
    results = record.results
    pooled = results[results["scope"] == "pooled"].set_index("metric")["value"]
    assert pooled["coverage"] == 1.0
    assert pooled["accuracy"] == pooled["accuracy_unclassified_as_wrong"] > 0.7
    assert set(results.loc[results["scope"] == "dataset", "dataset_id"]) == {"ds0", "ds1"}
    assert table_count(store, "zeroshot_failures") == 0
    for path in store.path.rglob("*"):
        assert not path.is_file() or KEY.encode() not in path.read_bytes()
    assert json.loads(run["params"])["url"] == f"{chat.url}/chat/completions"


def test_malformed_answer_is_retried(chat: ChatServer, store: Store) -> None:
    def malformed_first(request, headers, n):
        return completion("I think they are all sensitive." if n == 1 else fair_answer(request))

    chat.behaviour = malformed_first
    settings = ZeroShotSettings(batch_size=30, max_cells=30, seed=3)
    record = run_zeroshot(store, client_for(chat), settings=settings)
    assert record.n_cells == 30 and record.n_unclassified == 0
    assert len(chat.requests) == 3  # two data sets' batches, one retried
    assert sent_cells(chat.requests[0][0]) == sent_cells(chat.requests[1][0])


def test_cell_never_answered_is_recorded_as_unclassified(chat: ChatServer, store: Store) -> None:
    def omit_c2(request, headers, n):
        answers = [
            {"id": i, "response": marker_call(g)} for i, g in sent_cells(request) if i != "c2"
        ]
        return completion(json.dumps({"answers": answers}))

    chat.behaviour = omit_c2
    settings = ZeroShotSettings(batch_size=20, retries=2)
    record = run_zeroshot(store, client_for(chat), settings=settings)
    # 6 batches of 20; the retries re-ask only c2, which is never answered.
    assert len(chat.requests) == 6 * 3
    assert all(
        [i for i, _ in sent_cells(r)] == ["c2"] for r, _ in chat.requests if "these 1 ids" in str(r)
    )
    assert record.n_unclassified == 6
    failures = store.query("SELECT * FROM zeroshot_failures")
    assert len(failures) == 6 and set(failures["run_id"]) == {record.run_id}
    assert set(failures["reason"]) == {"no answer for this cell"}
    assert set(failures["attempts"]) == {3}
    assert "114 of 120 cells classified, 6 unclassified" in store.runs().iloc[-1]["note"]
    assert table_count(store, "predictions") == 114
    failed_cells = set(zip(failures["dataset_id"], failures["cell_index"]))
    predicted = store.query("SELECT dataset_id, cell_index FROM predictions")
    assert failed_cells.isdisjoint(zip(predicted["dataset_id"], predicted["cell_index"]))
    pooled = record.results[record.results["scope"] == "pooled"].set_index("metric")
    assert pooled.loc["coverage", "value"] == pytest.approx(114 / 120)
    assert pooled.loc["accuracy", "n_test"] == 114
    assert pooled.loc["accuracy_unclassified_as_wrong", "value"] == pytest.approx(
        pooled.loc["accuracy", "value"] * 114 / 120
    )


def test_refused_key_is_one_clear_error_and_writes_nothing(
    chat: ChatServer, store: Store, monkeypatch
) -> None:
    chat.behaviour = lambda request, headers, n: (
        401,
        {},
        json.dumps({"error": {"message": f"Incorrect API key provided: {KEY}"}}),
    )
    monkeypatch.setenv("SCDRUGMAP_CHAT_API_KEY", KEY)
    result = CliRunner().invoke(
        main,
        ["--store", str(store.path), "zeroshot", "--url", chat.url, "--model", "m"],
    )
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "HTTP 401" in errors[0] and chat.url in errors[0]
    assert KEY not in result.output
    assert len(chat.requests) == 1
    assert table_count(store, "runs") == 0 and table_count(store, "predictions") == 0


def test_cli_reads_url_model_and_key_from_the_environment(
    chat: ChatServer, store: Store, monkeypatch
) -> None:
    def needs_key(request, headers, n):
        if headers.get("authorization") != f"Bearer {KEY}":
            return 401, {}, "{}"
        return completion(fair_answer(request))

    chat.behaviour = needs_key
    monkeypatch.setenv("SCDRUGMAP_CHAT_URL", chat.url)
    monkeypatch.setenv("SCDRUGMAP_CHAT_MODEL", "env-model")
    monkeypatch.delenv("SCDRUGMAP_CHAT_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    result = CliRunner().invoke(
        main,
        [
            "--store",
            str(store.path),
            "zeroshot",
            "--where",
            "dataset_id = 'ds1'",
            "--max-cells",
            "25",
            "--batch-size",
            "10",
            "--top-genes",
            "12",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    output = json.loads(result.output)
    assert output["n_cells"] == 25 and "25 of 25 cells classified" in output["note"]
    assert {r["dataset_id"] for r in output["results"] if r["scope"] == "dataset"} == {"ds1"}
    assert len(chat.requests) == 3
    assert all(len(g) == 12 for r, _ in chat.requests for _, g in sent_cells(r))
    assert store.runs().iloc[-1]["embedding"] == "text:env-model"


def test_bad_settings_and_empty_selection_are_clear_errors(chat: ChatServer, store: Store) -> None:
    from scdrugmap.errors import InputError

    with pytest.raises(InputError, match="--batch-size must be at least 1"):
        run_zeroshot(store, client_for(chat), settings=ZeroShotSettings(batch_size=0))
    with pytest.raises(InputError, match="no labelled cells"):
        run_zeroshot(store, client_for(chat), where="dataset_id = 'none'")
    assert chat.requests == []


def test_unlabelled_cells_get_predictions_but_no_metrics(chat: ChatServer, store: Store) -> None:
    import duckdb

    with duckdb.connect(str(store.catalog_path)) as con:
        con.execute(
            "UPDATE cells SET label = 'unknown' WHERE dataset_id = 'ds0' AND cell_index < 10"
        )
    settings = ZeroShotSettings(include_unlabelled=True)
    record = run_zeroshot(store, client_for(chat), datasets="ds0", settings=settings)
    assert record.n_cells == 60
    predictions = store.query("SELECT * FROM predictions ORDER BY cell_index")
    assert len(predictions) == 60 and predictions["label"].isna().sum() == 10
    pooled = record.results[record.results["scope"] == "pooled"].set_index("metric")
    assert pooled.loc["accuracy", "n_test"] == 50
    assert pooled.loc["coverage", "n_test"] == 60
    assert pooled.loc["accuracy_unclassified_as_wrong", "n_test"] == 50
