"""Master and workers: tickets for the global quota, records shipped to the master, lost workers.

Records travel to the master over Locust's own ZeroMQ channel (runner.send_message), in
batches every 0.25 s, and the master writes DIR/requests-<worker>.csv for each worker: no
shared filesystem is needed. A worker flushes its batch when its test stops (also on SIGTERM).
A worker killed with SIGKILL loses at most its last unsent batch and its in-flight requests;
the master notices (Locust marks it missing after ~4 s without heartbeat), names it in the
run metadata and the report, and gives its unused tickets to the surviving workers.

The master confirms every batch once it is written; a worker keeps the batches not yet
confirmed. If its master dies, the worker writes those to requests-<worker>-unsent.csv
(next to where the master wrote, when that folder is on its machine) as it exits.
"""

from __future__ import annotations

import time
from pathlib import Path

import gevent

from ..client.writer import RecordWriter
from ..core.records import CONVERSATION_FIELDS, RECORD_FIELDS, Record
from .locust_internals import master_lost, message_loop_running, receive_message
from .quota import TICKETS_GRANT, TICKETS_REQUEST, TicketLedger

RECORDS = "tokenstorm_records"  # worker -> master: {"worker": id, "seq": n, "rows": [[...], ...]}
RECORDS_WRITTEN = "tokenstorm_records_written"  # master -> worker: {"seq": n}, batch n is on disk
WORKER_SUMMARY = "tokenstorm_worker_summary"  # worker -> master: {"worker": id, "client": {...}}
SCHEDULE_DONE = "tokenstorm_schedule_done"  # worker -> master: its share of the arrivals is done
FLUSH_EVERY_S = 0.25
_LIVE_FIELDS = [RECORD_FIELDS.index(f) for f in ("upstream", "scenario", "status", "error_type", "ttft_ms", "tpot_ms",
                                                 "e2e_ms", "output_tokens")]
FLUSH_ROWS = 200
CONFIRM_WAIT_S = 2.0  # how long a closing worker waits for the master to confirm its last batches


class RecordShipper:
    """A worker's outbox of records, sent to the master in batches and kept until it confirms them."""

    def __init__(self, runner, worker_id: str, client_summary=None, in_flight=None):
        self.runner = runner
        self.worker_id = worker_id
        self._client_summary = client_summary  # the worker's self-check, sent along with its records
        self._in_flight = in_flight
        self.rows: list[list] = []
        self.conversations: list[list] = []
        self.count = 0
        self._seq = 0
        self.unconfirmed: dict[int, tuple[list, list]] = {}  # seq -> (rows, conversations) sent, not yet written
        self._greenlet = gevent.spawn(self._loop)

    def write(self, record: Record) -> None:
        self.rows.append([getattr(record, f) for f in RECORD_FIELDS])
        self.count += 1
        if len(self.rows) >= FLUSH_ROWS:
            self.flush()

    def write_conversation(self, row: list) -> None:
        self.conversations.append(row)

    def flush(self) -> None:
        if self.rows or self.conversations:
            rows, self.rows = self.rows, []
            conversations, self.conversations = self.conversations, []
            self._seq += 1
            self.unconfirmed[self._seq] = (rows, conversations)
            data = {"worker": self.worker_id, "seq": self._seq, "rows": rows,
                    "in_flight": self._in_flight() if self._in_flight else 0}
            if conversations:
                data["conversations"] = conversations
            if self._client_summary is not None:
                data["client"] = self._client_summary()
            self.runner.send_message(RECORDS, data)

    def on_written(self, seq: int) -> None:
        self.unconfirmed.pop(seq, None)

    def _loop(self) -> None:
        while True:
            gevent.sleep(FLUSH_EVERY_S)
            self.flush()

    def close(self, spill_dir: Path) -> Path | None:
        """Send the last batch and wait briefly for the master to confirm what it has not yet; what
        stays unconfirmed (the master died or quit first) goes to a local file, whose path is
        returned (None when every record is on the master's disk)."""
        self._greenlet.kill(block=False)
        self.flush()
        if self.unconfirmed and not master_lost(self.runner):
            self._await_confirmations(CONFIRM_WAIT_S)
        return self._spill(spill_dir) if self.unconfirmed else None

    def _await_confirmations(self, wait_s: float) -> None:
        deadline = time.monotonic() + wait_s
        while self.unconfirmed and time.monotonic() < deadline:
            if message_loop_running(self.runner):  # Locust's message loop reads them
                gevent.sleep(0.02)
                continue
            # A worker told to quit has stopped its message loop: read the channel here.
            msg = receive_message(self.runner, deadline - time.monotonic())
            if msg is None:
                return
            if msg.type == RECORDS_WRITTEN:
                self.on_written(msg.data["seq"])

    def _spill(self, spill_dir: Path) -> Path:
        batches = [self.unconfirmed[seq] for seq in sorted(self.unconfirmed)]
        for folder in (spill_dir, Path.cwd()):
            try:
                folder.mkdir(parents=True, exist_ok=True)
                path = folder / f"requests-{self.worker_id}-unsent.csv"
                writer = RecordWriter(path)
                for rows, _ in batches:
                    for row in rows:
                        writer.write_row(row)
                writer.close()
                conversations = [row for _, conv in batches for row in conv]
                if conversations:
                    writer = RecordWriter(folder / f"conversations-{self.worker_id}-unsent.csv", CONVERSATION_FIELDS)
                    for row in conversations:
                        writer.write_row(row)
                    writer.close()
                return path
            except OSError:
                continue
        raise OSError(f"cannot write requests-{self.worker_id}-unsent.csv in {spill_dir} or {Path.cwd()}")


class MasterCollector:
    """The master's side: tickets, per-worker record files, worker loss."""

    def __init__(self, environment, results_dir: Path, total: int, on_spent, live=None, on_write_error=None):
        self.environment = environment
        self.runner = environment.runner
        self.results_dir = results_dir
        self.ledger = TicketLedger(total)
        self.live = live  # the web UI's figures for the whole run
        self._on_spent = on_spent
        self._on_write_error = on_write_error
        self._pending: list[tuple[str, str, int]] = []  # (client id, worker id, want)
        self.writers: dict[str, RecordWriter] = {}
        self.conversation_writers: dict[str, RecordWriter] = {}
        self.worker_of: dict[str, str] = {}  # Locust client id -> our worker id
        self.seen: dict[str, dict] = {}  # worker id -> facts for the metadata
        self.lost: dict[str, dict] = {}
        self.summaries: dict[str, dict] = {}
        runner = self.runner
        runner.register_message(TICKETS_REQUEST, self._on_tickets)
        runner.register_message(RECORDS, self._on_records)
        runner.register_message(WORKER_SUMMARY, self._on_summary)
        runner.register_message(SCHEDULE_DONE, self._on_schedule_done)
        self.schedule_done: set[str] = set()
        self._watch = gevent.spawn(self._watch_workers)

    def _worker_id(self, client_id: str) -> str:
        if client_id not in self.worker_of:
            worker = f"w{self.runner.get_worker_index(client_id)}"
            self.worker_of[client_id] = worker
            self.seen[worker] = {"client_id": client_id, "first_seen": time.time()}
        return self.worker_of[client_id]

    def _on_tickets(self, environment, msg, **_kwargs) -> None:
        worker = self._worker_id(msg.node_id)
        want = int(msg.data.get("want", 1))
        n = self.ledger.grant(worker, want)
        if n:
            self.runner.send_message(TICKETS_GRANT, {"n": n}, client_id=msg.node_id)
        else:  # all issued: answered if a lost worker's tickets come back, else the run ends first
            self._pending.append((msg.node_id, worker, want))

    def _on_records(self, environment, msg, **_kwargs) -> None:
        worker = msg.data["worker"]
        self.worker_of.setdefault(msg.node_id, worker)
        self.seen.setdefault(worker, {"client_id": msg.node_id, "first_seen": time.time()})
        writer = self.writers.get(worker)
        if writer is None:
            writer = self.writers[worker] = RecordWriter(self.results_dir / f"requests-{worker}.csv",
                                                         on_error=self._on_write_error)
        rows = msg.data["rows"]
        if msg.data.get("conversations"):
            conversations = self.conversation_writers.get(worker)
            if conversations is None:
                conversations = self.conversation_writers[worker] = RecordWriter(
                    self.results_dir / f"conversations-{worker}.csv", CONVERSATION_FIELDS,
                    on_error=self._on_write_error)
            for row in msg.data["conversations"]:
                conversations.write_row(row)
            conversations.flush()
        if msg.data.get("client"):
            self.summaries[worker] = msg.data["client"]
        for row in rows:
            writer.write_row(row)
        writer.flush()
        if "seq" in msg.data and writer.failed is None:  # unconfirmed, the worker keeps them (its -unsent file)
            self.runner.send_message(RECORDS_WRITTEN, {"seq": msg.data["seq"]}, client_id=msg.node_id)
        if self.live is not None:
            self.live.in_flight[worker] = msg.data.get("in_flight", 0)
            now = time.time()
            for row in rows:
                self.live.add(*(row[i] for i in _LIVE_FIELDS), now)
        used = sum(1 for row in rows if row[RECORD_FIELDS.index("error_type")] != "cancelled")
        self.ledger.use(worker, used)
        if self.ledger.spent:
            self.stop_watching()  # workers now leave as the run ends; they are not lost
            self._on_spent()

    def _on_schedule_done(self, environment, msg, **_kwargs) -> None:
        self.schedule_done.add(msg.data["worker"])
        expected = environment.parsed_options.arrival_processes or 1
        if len(self.schedule_done) >= expected:
            self.stop_watching()
            self._on_spent()

    def _on_summary(self, environment, msg, **_kwargs) -> None:
        self.summaries[msg.data["worker"]] = msg.data["client"]

    def _watch_workers(self) -> None:
        from locust.runners import STATE_MISSING

        while True:
            gevent.sleep(1.0)
            for client_id, worker in list(self.worker_of.items()):
                if worker in self.lost:
                    continue
                node = self.runner.clients.get(client_id)  # a worker that quit normally is removed
                if node is not None and node.state == STATE_MISSING:
                    self._lose(worker)

    def _lose(self, worker: str) -> None:
        returned = self.ledger.reclaim(worker)
        self.lost[worker] = {"at": time.time(), "requests_finished": self.ledger.used_by.get(worker, 0),
                             "tickets_returned": returned}
        print(f"tokenstorm: worker {worker} was lost after {self.lost[worker]['requests_finished']} finished "
              f"requests; {returned} unused tickets go to the other workers", flush=True)
        pending, self._pending = self._pending, []
        for client_id, owner, want in pending:
            if owner in self.lost:
                continue
            n = self.ledger.grant(owner, want)
            if n:
                self.runner.send_message(TICKETS_GRANT, {"n": n}, client_id=client_id)
            else:
                self._pending.append((client_id, owner, want))

    def flush(self) -> None:
        for writer in [*self.writers.values(), *self.conversation_writers.values()]:
            writer.flush()

    def stop_watching(self) -> None:
        self._watch.kill(block=False)

    def close(self) -> None:
        self.stop_watching()
        for writer in [*self.writers.values(), *self.conversation_writers.values()]:
            writer.close()

    def metadata(self) -> dict:
        workers = {}
        for worker, facts in sorted(self.seen.items()):
            workers[worker] = {**facts, "records": self.writers[worker].count if worker in self.writers else 0,
                               "lost": worker in self.lost, "client": self.summaries.get(worker)}
        return {"workers": workers, "lost": self.lost, "tickets": {"total": self.ledger.total,
                                                                    "issued": self.ledger.issued,
                                                                    "used": self.ledger.used}}
