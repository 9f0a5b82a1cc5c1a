"""Uploading a document to Arweave as a signed data transaction (format 2), over HTTP.

Published layouts followed (arweave-js `lib/transaction.ts`, `lib/deepHash.ts`,
`lib/merkle.ts`): the signature is RSA-PSS (SHA-256, 32-byte salt) over the SHA-384
"deep hash" of [format, owner, target, quantity, reward, last_tx, tags, data_size,
data_root]; the id is SHA-256 of the signature; for data up to one chunk (256 KiB) the data
root is the single leaf's id, SHA-256(SHA-256(SHA-256(data)) + SHA-256(size as a 32-byte
big-endian note)). Larger documents are refused: ticket metadata is a few hundred bytes.

Uploads are found again by their `QP-Document` tag through the gateway's GraphQL, so the
same document name uploads once, however often a mint is retried.
"""

from __future__ import annotations

import base64
import hashlib
import json

import httpx
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from queue_pipelines.failures import PermanentError, TransientError
from queue_pipelines.telemetry.provider_calls import observe_provider_call

MAX_SINGLE_CHUNK = 256 * 1024
NAME_TAG = "QP-Document"


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _int(text: str) -> int:
    return int.from_bytes(b64url_decode(text), "big")


def deep_hash(value: bytes | list) -> bytes:
    if isinstance(value, list):
        acc = hashlib.sha384(f"list{len(value)}".encode()).digest()
        for item in value:
            acc = hashlib.sha384(acc + deep_hash(item)).digest()
        return acc
    tag = hashlib.sha384(f"blob{len(value)}".encode()).digest()
    return hashlib.sha384(tag + hashlib.sha384(value).digest()).digest()


def single_chunk_data_root(data: bytes) -> bytes:
    if len(data) > MAX_SINGLE_CHUNK:
        raise PermanentError(
            f"document of {len(data)} bytes is over the 256 KiB this uploader takes"
        )
    note = len(data).to_bytes(32, "big")
    data_hash = hashlib.sha256(data).digest()
    return hashlib.sha256(
        hashlib.sha256(data_hash).digest() + hashlib.sha256(note).digest()
    ).digest()


class ArweaveWallet:
    """An Arweave wallet from its JWK (the JSON keyfile Arweave wallets export)."""

    def __init__(self, jwk_json: str):
        try:
            jwk = json.loads(jwk_json)
            public = rsa.RSAPublicNumbers(_int(jwk["e"]), _int(jwk["n"]))
            self.key = rsa.RSAPrivateNumbers(
                _int(jwk["p"]), _int(jwk["q"]), _int(jwk["d"]), _int(jwk["dp"]),
                _int(jwk["dq"]), _int(jwk["qi"]), public,
            ).private_key()  # fmt: skip
        except (ValueError, KeyError, TypeError):
            raise PermanentError(
                "the Arweave wallet is not an RSA JWK keyfile: check ARWEAVE_WALLET_JWK",
                code="invalid_keypair",
            ) from None
        self.owner = b64url_decode(jwk["n"])
        self.address = b64url(hashlib.sha256(self.owner).digest())

    def sign(self, message: bytes) -> bytes:
        return self.key.sign(
            message, padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32), hashes.SHA256()
        )


def generate_wallet_jwk() -> str:
    """A new 4096-bit wallet as a JWK (for tests and local gateways)."""
    numbers = rsa.generate_private_key(65537, 4096).private_numbers()

    def enc(value: int) -> str:
        return b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))

    public = numbers.public_numbers
    return json.dumps(
        {
            "kty": "RSA",
            "n": enc(public.n),
            "e": enc(public.e),
            "d": enc(numbers.d),
            "p": enc(numbers.p),
            "q": enc(numbers.q),
            "dp": enc(numbers.dmp1),
            "dq": enc(numbers.dmq1),
            "qi": enc(numbers.iqmp),
        }  # fmt: skip
    )


class ArweaveGateway:
    def __init__(self, url: str, wallet: ArweaveWallet, timeout: float = 30):
        self.url = url.rstrip("/")
        self.wallet = wallet
        self.http = httpx.Client(base_url=self.url, timeout=timeout)

    def _call(self, method: str, path: str, **kwargs) -> httpx.Response:
        # Timed per endpoint, without its argument (/price/<bytes>): few label values.
        operation = f"{method} /{path.strip('/').split('/')[0]}"
        with observe_provider_call("arweave", operation):
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.HTTPError as exc:
                raise TransientError(f"Arweave gateway {self.url} unreachable: {exc}") from exc
            if response.status_code == 429 or response.status_code >= 500:
                raise TransientError(f"Arweave gateway {self.url} answered {response.status_code}")
            if response.status_code >= 400:
                raise PermanentError(
                    f"Arweave gateway refused {method} {path}: {response.status_code} "
                    f"{response.text[:200]}"
                )
        return response

    def find(self, name: str) -> str | None:
        """The id of this wallet's upload tagged `name`, if any."""
        query = (
            "query($owner: String!, $name: String!) { transactions(owners: [$owner], "
            f'tags: [{{name: "{NAME_TAG}", values: [$name]}}], first: 1) {{ edges {{ node {{ id }} }} }} }}'
        )
        body = {"query": query, "variables": {"owner": self.wallet.address, "name": name}}
        edges = self._call("POST", "/graphql", json=body).json()["data"]["transactions"]["edges"]
        return edges[0]["node"]["id"] if edges else None

    def upload(self, name: str, data: bytes, content_type: str = "application/json") -> str:
        """Upload `data` tagged with `name` unless this wallet already did; returns the id."""
        existing = self.find(name)
        if existing:
            return existing
        anchor = self._call("GET", "/tx_anchor").text.strip()
        reward = self._call("GET", f"/price/{len(data)}").text.strip()
        tags = [(b"Content-Type", content_type.encode()), (NAME_TAG.encode(), name.encode())]
        root = single_chunk_data_root(data)
        signature = self.wallet.sign(
            deep_hash(
                [
                    b"2",
                    self.wallet.owner,
                    b"",
                    b"0",
                    reward.encode(),
                    b64url_decode(anchor),
                    [[k, v] for k, v in tags],
                    str(len(data)).encode(),
                    root,
                ]  # fmt: skip
            )
        )
        tx_id = b64url(hashlib.sha256(signature).digest())
        self._call(
            "POST",
            "/tx",
            json={
                "format": 2,
                "id": tx_id,
                "last_tx": anchor,
                "owner": b64url(self.wallet.owner),
                "tags": [{"name": b64url(k), "value": b64url(v)} for k, v in tags],
                "target": "",
                "quantity": "0",
                "data": b64url(data),
                "data_size": str(len(data)),
                "data_root": b64url(root),
                "reward": reward,
                "signature": b64url(signature),
            },  # fmt: skip
        )
        return tx_id
