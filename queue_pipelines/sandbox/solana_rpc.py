"""A Solana JSON-RPC endpoint over the embedded ledger.

`queue-pipelines dev` runs it as one long-lived process, so every run (each its own process)
talks to the same ledger through the same cluster code path production uses; the tests serve
it on a free port to exercise that path. It answers the methods solana-py's client calls for
minting, transfers and balances, and serves stored ticket metadata files under /metadata/.

`expire_blockhashes` is a fault switch for tests: while it is above zero, each blockhash
handed out is expired right after (LiteSVM then rejects transactions signed with it, as a
cluster does once a blockhash is too old).
"""

from __future__ import annotations

import argparse
import base64
import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction
from solders.transaction_metadata import FailedTransactionMetadata

from queue_pipelines.nft.keys import load_or_create_keypair
from queue_pipelines.sandbox.servers import refuse_taken_port, wait_for_port
from queue_pipelines.sandbox.solana_ledger import EmbeddedLedger

API_VERSION = "2.1.0"
# LiteSVM has no blocks: a blockhash stays valid until expired, so report a window ahead.
BLOCKHASH_WINDOW = 150


class RpcError(Exception):
    def __init__(self, code: int, message: str, data: Any = None):
        super().__init__(message)
        self.code, self.message, self.data = code, message, data


class LedgerRpc:
    def __init__(self, ledger: EmbeddedLedger):
        self.ledger = ledger
        self.slot = 1
        self.expire_blockhashes = 0
        self.calls: dict[str, int] = {}

    def _context(self, value: Any) -> dict:
        return {"context": {"slot": self.slot, "apiVersion": API_VERSION}, "value": value}

    @staticmethod
    def _account_json(account) -> dict:
        data = bytes(account.data)
        return {
            "data": [base64.b64encode(data).decode(), "base64"],
            "executable": account.executable,
            "lamports": account.lamports,
            "owner": str(account.owner),
            "rentEpoch": 18446744073709551615,
            "space": len(data),
        }

    def handle(self, method: str, params: list) -> Any:
        self.calls[method] = self.calls.get(method, 0) + 1
        handler = getattr(self, f"rpc_{method}", None)
        if handler is None:
            raise RpcError(-32601, f"Method not found: {method}")
        with self.ledger.lock:
            return handler(*params)

    def rpc_getHealth(self, *_):
        return "ok"

    def rpc_getVersion(self, *_):
        return {"solana-core": API_VERSION, "feature-set": 0}

    def rpc_getSlot(self, *_):
        return self.slot

    def rpc_getBlockHeight(self, *_):
        return self.slot

    def rpc_getLatestBlockhash(self, *_):
        blockhash = self.ledger.svm.latest_blockhash()
        if self.expire_blockhashes > 0:
            self.expire_blockhashes -= 1
            self.ledger.svm.expire_blockhash()
        return self._context(
            {"blockhash": str(blockhash), "lastValidBlockHeight": self.slot + BLOCKHASH_WINDOW}
        )

    def rpc_getBalance(self, address, *_):
        return self._context(self.ledger.svm.get_balance(Pubkey.from_string(address)) or 0)

    def rpc_getMinimumBalanceForRentExemption(self, size, *_):
        return self.ledger.svm.minimum_balance_for_rent_exemption(int(size))

    def rpc_getAccountInfo(self, address, *_):
        account = self.ledger.svm.get_account(Pubkey.from_string(address))
        return self._context(self._account_json(account) if account is not None else None)

    def rpc_getProgramAccounts(self, program, config=None):
        filters = (config or {}).get("filters") or []
        found = []
        for address, account in self.ledger.svm.get_program_accounts(Pubkey.from_string(program)):
            data = bytes(account.data)
            if all(_matches(data, f) for f in filters):
                found.append({"pubkey": str(address), "account": self._account_json(account)})
        return found

    def rpc_requestAirdrop(self, address, lamports, *_):
        return self.ledger.airdrop(Pubkey.from_string(address), int(lamports))

    def rpc_sendTransaction(self, encoded, config=None):
        encoding = (config or {}).get("encoding", "base58")
        if encoding != "base64":
            raise RpcError(-32602, f"unsupported encoding {encoding!r}: send base64")
        transaction = VersionedTransaction.from_bytes(base64.b64decode(encoded))
        result = self.ledger.process(transaction)
        self.slot += 1
        if isinstance(result, FailedTransactionMetadata):
            err = json.loads(result.to_json())["err"]
            logs = list(result.meta().logs())
            raise RpcError(
                -32002,
                f"Transaction simulation failed: {json.dumps(err)}",
                {
                    "err": err,
                    "logs": logs,
                    "accounts": None,
                    "unitsConsumed": result.meta().compute_units_consumed(),
                    "returnData": None,
                    "innerInstructions": None,
                },
            )
        return str(transaction.signatures[0])

    def rpc_getSignatureStatuses(self, signatures, *_):
        statuses = []
        for signature in signatures:
            if signature not in self.ledger.signatures:
                statuses.append(None)
                continue
            error = self.ledger.signatures[signature]
            statuses.append(
                {
                    "slot": self.slot,
                    "confirmations": None,
                    "err": error,
                    "status": {"Ok": None} if error is None else {"Err": error},
                    "confirmationStatus": "finalized",
                }
            )
        return self._context(statuses)


def _matches(data: bytes, rule: dict) -> bool:
    if "dataSize" in rule:
        return len(data) == int(rule["dataSize"])
    memcmp = rule.get("memcmp", {})
    raw = memcmp.get("bytes", "")
    # Only what this project filters on: a 32-byte address, base58 (the default) or base64.
    wanted = (
        base64.b64decode(raw)
        if memcmp.get("encoding") == "base64"
        else bytes(Pubkey.from_string(raw))
    )
    offset = int(memcmp.get("offset", 0))
    return data[offset : offset + len(wanted)] == wanted


def make_handler(rpc: LedgerRpc, metadata_dir: Path | None):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_):  # one line per request would drown the dev log
            pass

        def _reply(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            name = self.path.removeprefix("/metadata/")
            target = (metadata_dir / name).resolve() if metadata_dir else None
            if (
                target is None
                or not self.path.startswith("/metadata/")
                or target.parent != metadata_dir.resolve()
                or not target.is_file()
            ):
                self._reply(404, b'{"error":"not found"}', "application/json")
                return
            self._reply(200, target.read_bytes(), "application/json")

        def do_POST(self):
            request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            replies = [self._call(r) for r in request] if isinstance(request, list) else None
            reply = replies if replies is not None else self._call(request)
            self._reply(200, json.dumps(reply).encode(), "application/json")

        def _call(self, request: dict) -> dict:
            try:
                result = rpc.handle(request["method"], request.get("params") or [])
                return {"jsonrpc": "2.0", "result": result, "id": request.get("id")}
            except RpcError as exc:
                error = {"code": exc.code, "message": exc.message}
                if exc.data is not None:
                    error["data"] = exc.data
                return {"jsonrpc": "2.0", "error": error, "id": request.get("id")}

    return Handler


class LedgerRpcServer:
    """The endpoint on 127.0.0.1:`port`, served from a background thread."""

    def __init__(
        self, ledger: EmbeddedLedger, port: int = 0, metadata_dir: Path | None = None
    ) -> None:
        self.rpc = LedgerRpc(ledger)
        self.server = ThreadingHTTPServer(("127.0.0.1", port), make_handler(self.rpc, metadata_dir))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> LedgerRpcServer:
        self.thread.start()
        return self

    def __exit__(self, *_) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_embedded_solana(
    port: int,
    state_dir: Path,
    metadata_dir: Path,
    log_file: Path | None = None,
    process_group: int | None = None,
) -> subprocess.Popen:
    """The embedded ledger's endpoint as a child process (what `queue-pipelines dev` runs)."""
    refuse_taken_port(port, "the embedded Solana ledger")
    output = open(log_file, "ab") if log_file else subprocess.DEVNULL  # noqa: SIM115
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "queue_pipelines.sandbox.solana_rpc",
            "--port",
            str(port),
            "--state-dir",
            str(state_dir),
            "--metadata-dir",
            str(metadata_dir),
        ],
        stdout=output,
        stderr=subprocess.STDOUT,
        process_group=process_group,
    )
    wait_for_port(port, process, "embedded Solana ledger")
    return process


def main(argv: list[str] | None = None) -> None:
    """`python -m queue_pipelines.sandbox.solana_rpc`: what `queue-pipelines dev` starts."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--metadata-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    ledger = EmbeddedLedger(args.state_dir)
    payer = load_or_create_keypair(args.state_dir / "dev-payer.json")
    ledger.fund(payer.pubkey())
    args.metadata_dir.mkdir(parents=True, exist_ok=True)
    rpc = LedgerRpc(ledger)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(rpc, args.metadata_dir))
    print(
        f"embedded Solana ledger: http://127.0.0.1:{args.port} (payer {payer.pubkey()})", flush=True
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
