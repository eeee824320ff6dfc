//! The stored form of one memory: a small versioned binary layout, read without copying.
//!
//! Layout (version 1), all integers big-endian except the vector values:
//!
//! ```text
//! 0      version = 1
//! 1..17  id (16 bytes, the same as in the sled key)
//! 17..25 created_at, milliseconds since the Unix epoch (u64)
//! 25     namespace length n (u8, 0 = no namespace), then n bytes of namespace
//! ..     embedder fingerprint length f (u8), then f bytes (which embedder made the vector)
//! ..     text length t (u32), then t bytes of UTF-8 text
//! ..     dims d (u16), then d little-endian f32 values
//! ```
//!
//! The namespace comes first so that loading one namespace of a wallet can skip the other
//! namespaces' records without reading their text or vector. The fingerprint lets a loader skip
//! vectors made by another embedder (or at another size), which cannot be compared with the
//! current ones. Bad bytes are `StorageError::Codec`, never a panic.

use crate::storage::StorageError;

const VERSION: u8 = 1;

/// One memory as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryRecord {
    pub id: [u8; 16],
    pub created_at_ms: u64,
    pub namespace: Option<String>,
    pub embedder: String,
    pub text: String,
    pub vector: Vec<f32>,
}

/// A decoded record borrowing from its bytes; the vector stays raw until asked for.
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    pub id: [u8; 16],
    pub created_at_ms: u64,
    pub namespace: Option<&'a str>,
    pub embedder: &'a str,
    pub text: &'a str,
    vector: &'a [u8],
}

impl MemoryRecord {
    /// The stored bytes. Namespaces and fingerprints longer than 255 bytes, texts over 4 GiB and
    /// vectors over 65,535 values are cut to fit; callers validate well below those limits.
    pub fn encode(&self) -> Vec<u8> {
        let ns = self.namespace.as_deref().unwrap_or("").as_bytes();
        let ns = &ns[..ns.len().min(255)];
        let fp = &self.embedder.as_bytes()[..self.embedder.len().min(255)];
        let text = &self.text.as_bytes()[..self.text.len().min(u32::MAX as usize)];
        let vector = &self.vector[..self.vector.len().min(usize::from(u16::MAX))];
        let mut out = Vec::with_capacity(
            1 + 16 + 8 + 2 + ns.len() + fp.len() + 4 + text.len() + 2 + 4 * vector.len(),
        );
        out.push(VERSION);
        out.extend_from_slice(&self.id);
        out.extend_from_slice(&self.created_at_ms.to_be_bytes());
        out.push(ns.len() as u8);
        out.extend_from_slice(ns);
        out.push(fp.len() as u8);
        out.extend_from_slice(fp);
        out.extend_from_slice(&(text.len() as u32).to_be_bytes());
        out.extend_from_slice(text);
        out.extend_from_slice(&(vector.len() as u16).to_be_bytes());
        for x in vector {
            out.extend_from_slice(&x.to_le_bytes());
        }
        out
    }

    /// Decodes a whole record (an owned copy of [`RecordView::parse`]).
    pub fn decode(bytes: &[u8]) -> Result<Self, StorageError> {
        let view = RecordView::parse(bytes)?;
        let mut vector = Vec::with_capacity(view.dims());
        view.append_vector(&mut vector);
        Ok(Self {
            id: view.id,
            created_at_ms: view.created_at_ms,
            namespace: view.namespace.map(str::to_string),
            embedder: view.embedder.to_string(),
            text: view.text.to_string(),
            vector,
        })
    }
}

/// A cursor over record bytes; every read checks the length first.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StorageError> {
        if self.bytes.len() < n {
            return Err(StorageError::Codec("memory record is truncated".into()));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], StorageError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn str(&mut self, n: usize) -> Result<&'a str, StorageError> {
        std::str::from_utf8(self.take(n)?)
            .map_err(|_| StorageError::Codec("memory record text is not UTF-8".into()))
    }
}

impl<'a> RecordView<'a> {
    /// Reads the header, text and vector bounds of a record; trailing bytes are an error.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, StorageError> {
        let mut r = Reader { bytes };
        let [version] = r.array::<1>()?;
        if version != VERSION {
            return Err(StorageError::Codec(format!(
                "memory record version {version} is unknown"
            )));
        }
        let id = r.array::<16>()?;
        let created_at_ms = u64::from_be_bytes(r.array::<8>()?);
        let [ns_len] = r.array::<1>()?;
        let namespace = Some(r.str(usize::from(ns_len))?).filter(|s| !s.is_empty());
        let [fp_len] = r.array::<1>()?;
        let embedder = r.str(usize::from(fp_len))?;
        let text_len = u32::from_be_bytes(r.array::<4>()?) as usize;
        let text = r.str(text_len)?;
        let dims = usize::from(u16::from_be_bytes(r.array::<2>()?));
        let vector = r.take(dims * 4)?;
        if !r.bytes.is_empty() {
            return Err(StorageError::Codec(
                "memory record has trailing bytes".into(),
            ));
        }
        Ok(Self {
            id,
            created_at_ms,
            namespace,
            embedder,
            text,
            vector,
        })
    }

    /// Number of vector values.
    pub fn dims(&self) -> usize {
        self.vector.len() / 4
    }

    /// Appends the vector's values to `out` (for example, straight onto an index's rows).
    pub fn append_vector(&self, out: &mut Vec<f32>) {
        out.extend(
            self.vector
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(namespace: Option<&str>) -> MemoryRecord {
        MemoryRecord {
            id: [7; 16],
            created_at_ms: 1_747_000_000_123,
            namespace: namespace.map(str::to_string),
            embedder: "local-v1/4".into(),
            text: "user: héllo\nassistant: hi".into(),
            vector: vec![0.5, -0.5, 0.5, -0.5],
        }
    }

    #[test]
    fn round_trips_with_and_without_a_namespace() {
        for ns in [None, Some("project-x.v2")] {
            let rec = sample(ns);
            let bytes = rec.encode();
            assert_eq!(MemoryRecord::decode(&bytes).unwrap(), rec);
            let view = RecordView::parse(&bytes).unwrap();
            assert_eq!((view.namespace, view.dims()), (ns, 4));
        }
    }

    #[test]
    fn every_truncation_and_a_bad_version_are_codec_errors() {
        let bytes = sample(Some("ns")).encode();
        for cut in 0..bytes.len() {
            assert!(
                matches!(
                    RecordView::parse(&bytes[..cut]),
                    Err(StorageError::Codec(_))
                ),
                "cut at {cut}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(RecordView::parse(&longer).is_err());
        let mut v2 = bytes;
        v2[0] = 2;
        assert!(RecordView::parse(&v2).is_err());
    }
}
