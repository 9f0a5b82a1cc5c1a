// Reads argument sets for CreateMetadataAccountV3 as JSON on stdin and prints, for each, the
// instruction data Metaplex's own client serializes, as hex. Used by tests/test_nft_metaplex.py.
const { getCreateMetadataAccountV3InstructionDataSerializer } = require("@metaplex-foundation/mpl-token-metadata");
const { some, none, publicKey } = require("@metaplex-foundation/umi");

const serializer = getCreateMetadataAccountV3InstructionDataSerializer();
const cases = JSON.parse(require("fs").readFileSync(0, "utf8"));
const out = cases.map((c) => {
  const creators = c.creators === null ? none() : some(c.creators.map((x) => ({
    address: publicKey(x.address), verified: x.verified, share: x.share,
  })));
  const collection = c.collection === null ? none() : some({ verified: false, key: publicKey(c.collection) });
  const bytes = serializer.serialize({
    data: {
      name: c.name, symbol: c.symbol, uri: c.uri, sellerFeeBasisPoints: c.seller_fee_basis_points,
      creators, collection, uses: none(),
    },
    isMutable: c.is_mutable,
    collectionDetails: none(),
  });
  return Buffer.from(bytes).toString("hex");
});
process.stdout.write(JSON.stringify(out));
