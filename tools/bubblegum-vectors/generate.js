// Prints, as JSON, what Metaplex's published Bubblegum client (@metaplex-foundation/mpl-bubblegum,
// pinned in package.json) builds for a few argument sets: the tree-creation instructions
// (createAccount with spl-account-compression's getMerkleTreeSize, then createTreeConfig),
// mintV1 and transfer (program, account metas in order, data), the leaf hashes and PDAs a
// transfer needs, and a TreeConfig account's bytes. `npm ci && npm run vectors` rewrites
// vectors.json, which tests/test_nft_bubblegum.py compares queue_pipelines/nft/bubblegum.py
// against; the test itself needs no Node.js.
const {
  createTree, mintV1, transfer, findTreeConfigPda, findLeafAssetIdPda, hashLeaf,
  hashMetadataData, hashMetadataCreators, getMetadataArgsSerializer,
  getTreeConfigAccountDataSerializer, TokenStandard, TokenProgramVersion,
  DecompressibleState, Version,
} = require("@metaplex-foundation/mpl-bubblegum");
const { getMerkleTreeSize } = require("@metaplex-foundation/spl-account-compression");
const {
  createUmi, createSignerFromKeypair, lamports, publicKey, some, none,
} = require("@metaplex-foundation/umi");
const { web3JsEddsa } = require("@metaplex-foundation/umi-eddsa-web3js");

const umi = createUmi().use(web3JsEddsa());
// The generated builders ask the repository for each program's address, falling back to the
// published one: no program is overridden here.
umi.programs = { getPublicKey: (_name, fallback) => publicKey(fallback) };
// createTree asks the cluster for the tree account's rent; a fixed rate stands in for it
// (the service passes what getMinimumBalanceForRentExemption says).
umi.rpc = { getRent: async (bytes) => lamports(BigInt((bytes + 128) * 6960)) };

// Signers from fixed seeds, so that the vectors do not change from one run to the next.
const signer = (n) => createSignerFromKeypair(umi, umi.eddsa.createKeypairFromSeed(new Uint8Array(32).fill(n)));
const payer = signer(1);
const tree = signer(2);
const owner = signer(3);
const delegate = signer(4).publicKey;
const newOwner = signer(5).publicKey;
const collection = signer(6).publicKey;
const secondCreator = signer(7).publicKey;
umi.payer = payer;
umi.identity = payer;

const hex = (bytes) => Buffer.from(bytes).toString("hex");
const instructions = (builder) => builder.getInstructions().map((ix) => ({
  program_id: ix.programId.toString(),
  accounts: ix.keys.map((k) => [k.pubkey.toString(), k.isSigner, k.isWritable]),
  data: hex(ix.data),
}));

const treeShapes = [
  { max_depth: 14, max_buffer_size: 64, canopy_depth: 0 },
  { max_depth: 3, max_buffer_size: 8, canopy_depth: 0 },
  { max_depth: 20, max_buffer_size: 256, canopy_depth: 10 },
  { max_depth: 30, max_buffer_size: 2048, canopy_depth: 14 },
];

const metadataCases = [
  // a ticket: the payer its sole verified creator, 5% royalty, an unverified collection
  {
    name: "Aurora Live #1", symbol: "AUR", uri: "https://tickets.example/1.json",
    seller_fee_basis_points: 500, collection: collection.toString(),
    creators: [{ address: payer.publicKey.toString(), verified: true, share: 100 }],
    leaf_delegate: null, leaf_index: 0,
  },
  // nothing optional, a delegate other than the owner, a high leaf index
  {
    name: "A", symbol: "", uri: "", seller_fee_basis_points: 0, collection: null,
    creators: [], leaf_delegate: delegate.toString(), leaf_index: 16383,
  },
  // non-ASCII text, a 200-byte uri, two creators, the maximum royalty
  {
    name: "Orchestre — Salle Pleyel №12 ", symbol: "ÉVÉNEMENT",
    uri: "https://x.example/" + "a".repeat(182), seller_fee_basis_points: 10000,
    collection: null,
    creators: [
      { address: payer.publicKey.toString(), verified: true, share: 70 },
      { address: secondCreator.toString(), verified: false, share: 30 },
    ],
    leaf_delegate: null, leaf_index: 4294967296,
  },
];

const metadataArgs = (c) => ({
  name: c.name,
  symbol: c.symbol,
  uri: c.uri,
  sellerFeeBasisPoints: c.seller_fee_basis_points,
  primarySaleHappened: false,
  isMutable: true,
  editionNonce: none(),
  tokenStandard: some(TokenStandard.NonFungible),
  collection: c.collection === null ? none() : some({ verified: false, key: publicKey(c.collection) }),
  uses: none(),
  tokenProgramVersion: TokenProgramVersion.Original,
  creators: c.creators.map((x) => ({ address: publicKey(x.address), verified: x.verified, share: x.share })),
});

const transferCases = [
  // the owner signs, no delegate, a proof of three nodes beyond the canopy
  { root: 7, data_hash: 8, creator_hash: 9, nonce: 5, index: 5, delegate: null, proof: [10, 11, 12] },
  // a delegate that does not sign, the whole proof in the canopy, large nonce and index
  {
    root: 13, data_hash: 14, creator_hash: 15, nonce: 4294967301, index: 1073741823,
    delegate: delegate.toString(), proof: [],
  },
];
const filled = (n) => new Uint8Array(32).fill(n);

async function main() {
  const out = {
    generator: "@metaplex-foundation/mpl-bubblegum 5.1.0, @metaplex-foundation/spl-account-compression (its dependency)",
    payer: payer.publicKey.toString(),
    merkle_tree: tree.publicKey.toString(),
    leaf_owner: owner.publicKey.toString(),
    new_leaf_owner: newOwner.toString(),
    tree_config: findTreeConfigPda(umi, { merkleTree: tree.publicKey })[0].toString(),
    tree_sizes: treeShapes.map((s) => ({ ...s, size: getMerkleTreeSize(s.max_depth, s.max_buffer_size, s.canopy_depth) })),
    create_tree: [],
    mint_v1: [],
    transfer: [],
  };
  for (const [shape, isPublic] of [[treeShapes[0], null], [treeShapes[1], false], [treeShapes[2], true]]) {
    const builder = await createTree(umi, {
      merkleTree: tree, maxDepth: shape.max_depth, maxBufferSize: shape.max_buffer_size,
      canopyDepth: shape.canopy_depth, public: isPublic === null ? none() : some(isPublic),
    });
    out.create_tree.push({ ...shape, public: isPublic, instructions: instructions(builder) });
  }
  for (const c of metadataCases) {
    const metadata = metadataArgs(c);
    const builder = mintV1(umi, {
      leafOwner: owner.publicKey, merkleTree: tree.publicKey, metadata,
      ...(c.leaf_delegate ? { leafDelegate: publicKey(c.leaf_delegate) } : {}),
    });
    out.mint_v1.push({
      ...c,
      instructions: instructions(builder),
      metadata_args: hex(getMetadataArgsSerializer().serialize(metadata)),
      data_hash: hex(hashMetadataData(metadata)),
      creator_hash: hex(hashMetadataCreators(metadata.creators)),
      asset_id: findLeafAssetIdPda(umi, { merkleTree: tree.publicKey, leafIndex: c.leaf_index })[0].toString(),
      leaf_hash: hex(hashLeaf(umi, {
        merkleTree: tree.publicKey, owner: owner.publicKey, leafIndex: c.leaf_index, metadata,
        ...(c.leaf_delegate ? { delegate: publicKey(c.leaf_delegate) } : {}),
      })),
    });
  }
  for (const c of transferCases) {
    const builder = transfer(umi, {
      leafOwner: owner, newLeafOwner: newOwner, merkleTree: tree.publicKey,
      root: filled(c.root), dataHash: filled(c.data_hash), creatorHash: filled(c.creator_hash),
      nonce: c.nonce, index: c.index, proof: c.proof.map((n) => signer(n).publicKey),
      ...(c.delegate ? { leafDelegate: publicKey(c.delegate) } : {}),
    });
    out.transfer.push({
      ...c, proof: c.proof.map((n) => signer(n).publicKey.toString()), instructions: instructions(builder),
    });
  }
  const config = {
    treeCreator: payer.publicKey, treeDelegate: delegate, totalMintCapacity: 16384n,
    numMinted: 4294967301n, isPublic: false, isDecompressible: DecompressibleState.Disabled,
    version: Version.V1,
  };
  out.tree_config_account = {
    tree_creator: payer.publicKey.toString(), tree_delegate: delegate.toString(),
    total_mint_capacity: 16384, num_minted: 4294967301, is_public: false,
    data: hex(getTreeConfigAccountDataSerializer().serialize(config)),
  };
  process.stdout.write(JSON.stringify(out, null, 1) + "\n");
}

main().catch((error) => { console.error(error); process.exit(1); });
