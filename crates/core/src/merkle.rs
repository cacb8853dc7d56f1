//! RFC 6962 / RFC 9162 Merkle Tree Hash over a batch's records, built incrementally so that a
//! batch never has to hold its leaf hashes.

use ring::digest::{Context, SHA256};

pub type Digest = [u8; 32];

const LEAF_PREFIX: u8 = 0x00;
const NODE_PREFIX: u8 = 0x01;

pub fn sha256(data: &[u8]) -> Digest {
    finish(ring::digest::digest(&SHA256, data))
}

/// `SHA-256(0x00 || record)`.
pub fn leaf_hash(record: &[u8]) -> Digest {
    let mut ctx = Context::new(&SHA256);
    ctx.update(&[LEAF_PREFIX]);
    ctx.update(record);
    finish(ctx.finish())
}

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Digest, right: &Digest) -> Digest {
    let mut block = [0u8; 65];
    block[0] = NODE_PREFIX;
    block[1..33].copy_from_slice(left);
    block[33..].copy_from_slice(right);
    sha256(&block)
}

fn finish(d: ring::digest::Digest) -> Digest {
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Builds `MTH(D[n])` from leaves pushed one at a time, keeping one hash per set bit of `n`.
#[derive(Debug, Default, Clone)]
pub struct MerkleBuilder {
    /// Roots of complete subtrees, largest first; `sizes[i]` is the leaf count under `roots[i]`.
    roots: Vec<Digest>,
    sizes: Vec<u64>,
    count: u64,
}

impl MerkleBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn push_record(&mut self, record: &[u8]) {
        self.push_leaf_hash(leaf_hash(record));
    }

    pub fn push_leaf_hash(&mut self, leaf: Digest) {
        let mut hash = leaf;
        let mut size = 1u64;
        // Merge equal-sized neighbours, as binary addition carries.
        while self.sizes.last() == Some(&size) {
            self.sizes.pop();
            let left = self.roots.pop().unwrap_or_default();
            hash = node_hash(&left, &hash);
            size *= 2;
        }
        self.roots.push(hash);
        self.sizes.push(size);
        self.count += 1;
    }

    /// The tree head. RFC 6962 splits at the largest power of two below `n`, which is exactly
    /// folding the complete subtrees from the right.
    pub fn root(&self) -> Digest {
        let mut iter = self.roots.iter().rev();
        match iter.next() {
            None => sha256(&[]),
            Some(last) => iter.fold(*last, |acc, left| node_hash(left, &acc)),
        }
    }

    pub fn reset(&mut self) {
        self.roots.clear();
        self.sizes.clear();
        self.count = 0;
    }
}

/// `MTH` of a list of records, for tests and small inputs.
pub fn merkle_root<'a>(records: impl IntoIterator<Item = &'a [u8]>) -> Digest {
    let mut builder = MerkleBuilder::new();
    for record in records {
        builder.push_record(record);
    }
    builder.root()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Certificate Transparency reference leaves and `MTH(D[n])` for n = 0..8.
    const LEAVES: [&str; 8] = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ];
    const ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    #[test]
    fn rfc6962_known_answers() {
        let leaves: Vec<Vec<u8>> = LEAVES.iter().map(|h| hex::decode(h).unwrap()).collect();
        for (n, expected) in ROOTS.iter().enumerate() {
            let root = merkle_root(leaves[..n].iter().map(Vec::as_slice));
            assert_eq!(hex::encode(root), *expected, "tree of {n} leaves");
        }
    }

    /// The recursive definition of RFC 6962 §2.1, as an independent reference.
    fn reference(leaves: &[Digest]) -> Digest {
        match leaves.len() {
            0 => sha256(&[]),
            1 => leaves[0],
            n => {
                // The largest power of two strictly below n.
                let k = 1usize << (usize::BITS - 1 - (n - 1).leading_zeros());
                node_hash(&reference(&leaves[..k]), &reference(&leaves[k..]))
            }
        }
    }

    #[test]
    fn incremental_matches_recursive_definition() {
        let mut builder = MerkleBuilder::new();
        let mut leaves = Vec::new();
        for i in 0u32..300 {
            let leaf = leaf_hash(&i.to_be_bytes());
            leaves.push(leaf);
            builder.push_leaf_hash(leaf);
            assert_eq!(builder.root(), reference(&leaves), "size {}", i + 1);
        }
    }
}
