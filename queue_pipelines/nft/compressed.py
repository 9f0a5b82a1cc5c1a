"""Compressed tickets (`standard: compressed`): Bubblegum leaves in the payer's ticket tree.

A compressed ticket is no account of its own but a leaf of a Merkle tree, so this differs
from the other standards in three ways (docs/nft.md):

- **The tree.** The payer's tickets go into one private tree (only the payer mints into it),
  of depth 14 (16,384 tickets) with a change-log buffer of 64 concurrent changes and no
  canopy (a transfer's proof is its 14 nodes, which fit a transaction). Its address derives
  from the payer's secret and a generation number; the first compressed mint creates it
  (about 0.22 SOL of rent), and a full tree is followed by the next generation's.
- **The asset id** derives from the leaf's nonce, the tree's mint count when the leaf is
  appended. It is read before sending and checked after: this process mints into a tree one
  ticket at a time, and a count that grew by more than one (another process minted beside it)
  leaves the asset id unknown; the request then fails for an operator, its claim kept.
- **At most once** cannot rest on a derived address: a mint in doubt (sent, never recorded)
  cannot be looked up without an indexer, so it is left to an operator too, never minted again.

Both programs (Bubblegum and SPL Account Compression) must be on the cluster. Where they are
not, the embedded ledger always, the request is refused permanently and nothing is created.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from queue_pipelines.failures import PermanentError, ProviderError
from queue_pipelines.ledger import Claim
from queue_pipelines.nft import bubblegum
from queue_pipelines.nft.chain import AlreadyProcessed, Chain, require_funds

TREE_MAX_DEPTH = 14
TREE_MAX_BUFFER_SIZE = 64
TREE_CANOPY_DEPTH = 0
# Signature fees of one transaction (2 signatures at 5000 lamports) with headroom.
FEE_HEADROOM = 50_000

_mint_turns: dict[Pubkey, threading.Lock] = {}
_mint_turns_guard = threading.Lock()


def programs_missing(action: str) -> PermanentError:
    """The refusal where the cluster lacks the programs (as `standard: metaplex` is refused)."""
    return PermanentError(
        f"standard 'compressed' needs the Metaplex Bubblegum program "
        f"({bubblegum.BUBBLEGUM_PROGRAM_ID}) and SPL Account Compression "
        f"({bubblegum.ACCOUNT_COMPRESSION_PROGRAM_ID}), which this ledger does not have (the "
        f"embedded ledger never has them): {action}",
        code="program_missing",
    )


class LandedUnidentified(ProviderError):
    """A compressed mint landed, and which leaf is the ticket's cannot be told: a permanent
    failure for an operator, and not a refusal (the effect ledger keeps the claim in doubt,
    so that nothing mints it again)."""

    def __init__(self, reason: str):
        super().__init__(reason, permanent=True, code="needs_reconciliation")


def in_doubt(claim: Claim) -> None:
    """A compressed mint claimed and never recorded: whether it landed needs an indexer."""
    raise PermanentError(
        f"an earlier attempt of {claim.effect_key} may have minted a compressed ticket and did not "
        "record it; a compressed ticket has no address of its own to look up: find it with an "
        "indexer (DAS getAssetsByOwner for the buyer) before minting it again under a new key",
        code="needs_reconciliation",
    )


def tree_keypair(payer: Keypair, generation: int) -> Keypair:
    """The payer's ticket tree of a generation: the same on every run, unpredictable to
    anyone without the payer's secret."""
    seed = hmac.new(bytes(payer)[:32], f"qp-ticket-tree:{generation}".encode(), hashlib.sha256)
    return Keypair.from_seed(seed.digest())


def _send(chain: Chain, instructions: Sequence[Instruction], signers: Sequence[Keypair]) -> str:
    try:
        return chain.send(instructions, signers)
    except AlreadyProcessed as landed:
        return str(landed)
    except PermanentError as refused:
        if refused.code == "program_missing":
            raise programs_missing(
                "mint with standard 'token-2022', or against a cluster that has them"
            ) from None
        raise


def _tree_config(chain: Chain, tree: Pubkey) -> bubblegum.TreeConfig | None:
    account = chain.account(bubblegum.tree_config_address(tree))
    return bubblegum.decode_tree_config(account.data) if account is not None else None


def _create_tree(chain: Chain, payer: Keypair, tree: Keypair) -> None:
    """The tree account and its config, in one atomic transaction."""
    size = bubblegum.merkle_tree_size(TREE_MAX_DEPTH, TREE_MAX_BUFFER_SIZE, TREE_CANOPY_DEPTH)
    rent = chain.rent_exempt_minimum(size)
    require_funds(chain, payer.pubkey(), rent + FEE_HEADROOM)
    instructions = bubblegum.create_tree_instructions(
        payer=payer.pubkey(),
        merkle_tree=tree.pubkey(),
        tree_creator=payer.pubkey(),
        max_depth=TREE_MAX_DEPTH,
        max_buffer_size=TREE_MAX_BUFFER_SIZE,
        canopy_depth=TREE_CANOPY_DEPTH,
        lamports=rent,
        public=None,  # private: only the tree's creator, the payer, mints into it
    )
    try:
        _send(chain, instructions, [payer, tree])
    except PermanentError:
        # Another process created the same tree meanwhile: its transaction is ours too.
        if _tree_config(chain, tree.pubkey()) is None:
            raise


def open_tree(chain: Chain, payer: Keypair) -> tuple[Pubkey, bubblegum.TreeConfig]:
    """The payer's first ticket tree with room left, created when missing."""
    for generation in itertools.count():
        tree = tree_keypair(payer, generation)
        config = _tree_config(chain, tree.pubkey())
        if config is None:
            _create_tree(chain, payer, tree)
            config = _tree_config(chain, tree.pubkey())
            if config is None:
                raise PermanentError(f"ticket tree {tree.pubkey()} was not created")
        if config.num_minted < config.total_mint_capacity:
            return tree.pubkey(), config
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class CompressedMint:
    asset_id: Pubkey
    tree: Pubkey
    nonce: int
    signature: str


def _turn(payer: Pubkey) -> threading.Lock:
    with _mint_turns_guard:
        return _mint_turns.setdefault(payer, threading.Lock())


def mint_compressed(
    chain: Chain, payer: Keypair, owner: Pubkey, metadata: bubblegum.MetadataArgs
) -> CompressedMint:
    """Append the ticket to the payer's tree, the buyer its owner and delegate."""
    # One compressed mint of this payer's at a time here: the nonce read before sending is
    # then this mint's unless another process mints into the tree meanwhile (checked below).
    with _turn(payer.pubkey()):
        tree, config = open_tree(chain, payer)
        nonce = config.num_minted
        instruction = bubblegum.mint_v1(
            merkle_tree=tree,
            leaf_owner=owner,
            payer=payer.pubkey(),
            tree_creator_or_delegate=payer.pubkey(),
            metadata=metadata,
        )
        signature = _send(chain, [instruction], [payer])
        after = _tree_config(chain, tree)
    if after is None or after.num_minted != nonce + 1:
        minted = after.num_minted if after else "?"
        raise LandedUnidentified(
            f"compressed ticket minted into tree {tree} (signature {signature}) while other "
            f"mints went in beside it (mint count {nonce} -> {minted}): which leaf is this "
            "ticket's needs the transaction's log or an indexer (DAS getAssetsByOwner for the "
            "buyer); reconcile it by hand, do not send the request again"
        )
    return CompressedMint(bubblegum.asset_id(tree, nonce), tree, nonce, signature)


def refuse_transfer(chain: Chain, asset: str) -> PermanentError:
    """Why this service cannot move a compressed ticket. Bubblegum's transfer must carry the
    leaf as the tree holds it now (root, data and creator hashes, nonce, index and proof),
    which on a cluster only an indexer knows (DAS getAsset and getAssetProof); this service
    queries none yet, so it refuses rather than guess. Where the programs are missing, that
    is the reason given."""
    program = chain.account(bubblegum.BUBBLEGUM_PROGRAM_ID)
    if program is None:
        return programs_missing(
            "transfer compressed tickets against a cluster that has them (and a DAS indexer)"
        )
    return PermanentError(
        f"transferring compressed ticket {asset} needs its current leaf and Merkle proof from "
        "a DAS indexer (getAssetProof), which this service does not query: transfer it with a "
        "wallet or tool that does",
        code="needs_indexer",
    )
