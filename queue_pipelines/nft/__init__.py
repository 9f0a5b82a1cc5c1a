"""NFT tickets on Solana: instruction encoders, account decoders, minting and transfers."""
