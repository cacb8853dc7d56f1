//! RFC 6962 / RFC 9162 Merkle Tree Hash over a batch's records, built incrementally so that a
//! batch never has to hold its leaf hashes.

use sha2::Digest as _;

/// A SHA-256 output.
pub type Digest = [u8; 32];

const LEAF_PREFIX: u8 = 0x00;
const NODE_PREFIX: u8 = 0x01;

/// `SHA-256(data)`.
pub fn sha256(data: &[u8]) -> Digest {
    sha2::Sha256::digest(data).into()
}

/// `SHA-256(0x00 || record)`. Compressed directly, like [`node_hash`]: the first block is the
/// prefix and 63 bytes of the record, the whole blocks after it are compressed where they lie in
/// the record, and only the tail is laid out with its padding. This is every record's hash, for
/// the signer and the verifier, and the generic hasher's buffering cost a tenth of its time.
pub fn leaf_hash(record: &[u8]) -> Digest {
    let mut state = SHA256_IV;
    let mut first = [0u8; 64];
    first[0] = LEAF_PREFIX;
    let head = record.len().min(63);
    first[1..1 + head].copy_from_slice(&record[..head]);
    let rest = &record[head..];
    let (blocks, tail) = rest.as_chunks::<64>();
    let total_bits = (record.len() as u64 + 1) * 8;
    if head < 63 {
        // The whole message fits in the first block or two; `rest` is empty.
        return finish(state, &first[..1 + head], total_bits);
    }
    sha2::block_api::compress256(&mut state, &[first]);
    sha2::block_api::compress256(&mut state, blocks);
    finish(state, tail, total_bits)
}

/// Compresses `tail` (under 64 bytes, the end of the message) with SHA-256's padding for a
/// message of `total_bits`, into `state`, and gives the digest.
fn finish(mut state: [u32; 8], tail: &[u8], total_bits: u64) -> Digest {
    let mut last = [[0u8; 64]; 2];
    let flat = last.as_flattened_mut();
    flat[..tail.len()].copy_from_slice(tail);
    flat[tail.len()] = 0x80;
    // The length takes the last 8 bytes: a second block when the tail and its 0x80 leave fewer.
    let blocks = if tail.len() < 56 { 1 } else { 2 };
    flat[blocks * 64 - 8..blocks * 64].copy_from_slice(&total_bits.to_be_bytes());
    sha2::block_api::compress256(&mut state, &last[..blocks]);
    let mut out = [0u8; 32];
    for (chunk, word) in out.chunks_exact_mut(4).zip(state) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    out
}

const SHA256_IV: [u32; 8] =
    [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];

/// `SHA-256(0x01 || left || right)`. The message is always 65 bytes, so its two padded blocks
/// are laid out here and compressed directly: half the Merkle work is this function.
pub fn node_hash(left: &Digest, right: &Digest) -> Digest {
    let mut blocks = [[0u8; 64]; 2];
    blocks[0][0] = NODE_PREFIX;
    blocks[0][1..33].copy_from_slice(left);
    blocks[0][33..].copy_from_slice(&right[..31]);
    blocks[1][0] = right[31];
    blocks[1][1] = 0x80;
    blocks[1][56..].copy_from_slice(&(65u64 * 8).to_be_bytes());
    let mut state = SHA256_IV;
    sha2::block_api::compress256(&mut state, &blocks);
    let mut out = [0u8; 32];
    for (chunk, word) in out.chunks_exact_mut(4).zip(state) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
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
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Leaves pushed so far.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// Whether no leaf was pushed.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The tree over `leaves` (leaf hashes).
    pub fn from_leaves(leaves: &[Digest]) -> Self {
        let mut builder = Self::new();
        for leaf in leaves {
            builder.push_leaf_hash(*leaf);
        }
        builder
    }

    /// Adds a record (its canonical bytes) as the next leaf.
    pub fn push_record(&mut self, record: &[u8]) {
        self.push_leaf_hash(leaf_hash(record));
    }

    /// Adds the next leaf by its [`leaf_hash`], for a caller that already computed it.
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

    /// Empties the tree, keeping its allocations for the next batch.
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

/// The RFC 9162 §2.1.3.1 inclusion proof of leaf `index` among `leaves` (leaf hashes): the
/// sibling subtree hashes from the leaf up. None if `index` is not a leaf.
pub fn inclusion_proof(leaves: &[Digest], index: usize) -> Option<Vec<Digest>> {
    if index >= leaves.len() {
        return None;
    }
    let mut proof = Vec::new();
    audit_path(leaves, index, &mut proof);
    Some(proof)
}

/// Appends `PATH(m, D[n])` to `out`, nearest sibling first. Each level hashes the half the leaf
/// is not in, so the whole proof costs one pass over the leaves.
fn audit_path(leaves: &[Digest], m: usize, out: &mut Vec<Digest>) {
    let n = leaves.len();
    if n <= 1 {
        return;
    }
    let k = largest_power_of_two_below(n);
    let (inner, other, m) =
        if m < k { (&leaves[..k], &leaves[k..], m) } else { (&leaves[k..], &leaves[..k], m - k) };
    audit_path(inner, m, out);
    out.push(MerkleBuilder::from_leaves(other).root());
}

/// The largest power of two strictly below `n` (n ≥ 2): where RFC 6962 splits a tree.
fn largest_power_of_two_below(n: usize) -> usize {
    1usize << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// The root that `proof` leads to from `leaf` at `index` in a tree of `size` leaves, by the
/// algorithm of RFC 9162 §2.1.3.2; None if the proof cannot belong to such a leaf (too long,
/// too short, or an index outside the tree). Its work is bounded by the proof's length.
pub fn root_from_inclusion_proof(leaf: Digest, index: u64, size: u64, proof: &[Digest]) -> Option<Digest> {
    if index >= size {
        return None;
    }
    let (mut f, mut s) = (index, size - 1);
    let mut root = leaf;
    for sibling in proof {
        if s == 0 {
            return None;
        }
        if f & 1 == 1 || f == s {
            root = node_hash(sibling, &root);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            root = node_hash(&root, sibling);
        }
        f >>= 1;
        s >>= 1;
    }
    (s == 0).then_some(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Certificate Transparency reference leaves and `MTH(D[n])` for n = 0..8.
    const LEAVES: [&str; 8] =
        ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"];
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

    #[test]
    fn leaf_hashes_are_sha256_of_the_prefixed_record_at_every_length() {
        // Every way the message can end: within the first block, at its edge, with the length
        // in the block of the tail or in one more, and after many whole blocks.
        for len in 0..=400 {
            let record: Vec<u8> = (0..len).map(|i| (i * 31 + len) as u8).collect();
            let expected: Digest =
                sha2::Sha256::new().chain_update([LEAF_PREFIX]).chain_update(&record).finalize().into();
            assert_eq!(leaf_hash(&record), expected, "a record of {len} bytes");
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
    fn node_hash_is_sha256_of_the_concatenation() {
        let (left, right) = (sha256(b"left"), sha256(b"right"));
        let mut message = vec![NODE_PREFIX];
        message.extend_from_slice(&left);
        message.extend_from_slice(&right);
        assert_eq!(node_hash(&left, &right), sha256(&message));
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

    /// RFC 9162 §2.1.3.1 by its recursive definition: an independent reference for the proofs.
    fn reference_path(leaves: &[Digest], m: usize) -> Vec<Digest> {
        if leaves.len() <= 1 {
            return Vec::new();
        }
        let k = 1usize << (usize::BITS - 1 - (leaves.len() - 1).leading_zeros());
        if m < k {
            let mut path = reference_path(&leaves[..k], m);
            path.push(reference(&leaves[k..]));
            path
        } else {
            let mut path = reference_path(&leaves[k..], m - k);
            path.push(reference(&leaves[..k]));
            path
        }
    }

    #[test]
    fn every_inclusion_proof_leads_to_the_root_and_no_altered_one_does() {
        let leaves: Vec<Digest> = (0u32..70).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        for n in 1..leaves.len() {
            let tree = &leaves[..n];
            let root = reference(tree);
            for m in 0..n {
                let proof = inclusion_proof(tree, m).unwrap();
                assert_eq!(proof, reference_path(tree, m), "n={n} m={m}");
                let (index, size) = (m as u64, n as u64);
                assert_eq!(
                    root_from_inclusion_proof(tree[m], index, size, &proof),
                    Some(root),
                    "n={n} m={m}"
                );
                // Another leaf, index, size, a changed, missing or extra hash: not this root.
                assert_ne!(root_from_inclusion_proof(leaf_hash(b"other"), index, size, &proof), Some(root));
                if n > 1 {
                    let other = (m + 1) % n;
                    assert_ne!(root_from_inclusion_proof(tree[m], other as u64, size, &proof), Some(root));
                    let mut changed = proof.clone();
                    changed[m % proof.len()][0] ^= 1;
                    assert_ne!(root_from_inclusion_proof(tree[m], index, size, &changed), Some(root));
                    assert_ne!(root_from_inclusion_proof(tree[m], index, size, &proof[1..]), Some(root));
                }
                let mut longer = proof.clone();
                longer.push(root);
                assert_eq!(root_from_inclusion_proof(tree[m], index, size, &longer), None);
                assert_eq!(root_from_inclusion_proof(tree[m], size, size, &proof), None);
            }
        }
        assert_eq!(inclusion_proof(&leaves[..3], 3), None);
    }
}
