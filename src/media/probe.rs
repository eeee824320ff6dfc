//! Pure readers of media headers: what a byte string is (magic bytes), an image's size, an
//! audio clip's length. Small, allocation-free and fuzzed (`fuzz_targets/media_content.rs`).
//!
//! Each reader looks only at the bytes it is given and returns `None` when it cannot tell; a
//! caller that needs a bound then assumes the worst (`media::Kind`).

/// What the bytes are, by their magic numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniffed {
    Png,
    Jpeg,
    Webp,
    /// HEIF with an HEVC-coded image (`heic`, `heix`, … brands).
    Heic,
    /// HEIF of another codec, or a generic `mif1`/`msf1` file that is not AVIF.
    Heif,
    Gif,
    Avif,
    Wav,
    Mp3,
    Pdf,
}

impl Sniffed {
    /// The MIME type of what was sniffed.
    pub fn mime(self) -> &'static str {
        match self {
            Sniffed::Png => "image/png",
            Sniffed::Jpeg => "image/jpeg",
            Sniffed::Webp => "image/webp",
            Sniffed::Heic => "image/heic",
            Sniffed::Heif => "image/heif",
            Sniffed::Gif => "image/gif",
            Sniffed::Avif => "image/avif",
            Sniffed::Wav => "audio/wav",
            Sniffed::Mp3 => "audio/mp3",
            Sniffed::Pdf => "application/pdf",
        }
    }
}

const HEIC_BRANDS: [&[u8; 4]; 8] = [
    b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs",
];

/// Identifies the bytes by magic number.
pub fn sniff(b: &[u8]) -> Option<Sniffed> {
    if b.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Some(Sniffed::Png);
    }
    if b.starts_with(&[0xff, 0xd8, 0xff]) {
        return Some(Sniffed::Jpeg);
    }
    if b.len() >= 12 && &b[..4] == b"RIFF" {
        return match &b[8..12] {
            b"WEBP" => Some(Sniffed::Webp),
            b"WAVE" => Some(Sniffed::Wav),
            _ => None,
        };
    }
    if b.starts_with(b"GIF87a") || b.starts_with(b"GIF89a") {
        return Some(Sniffed::Gif);
    }
    if b.len() >= 12 && &b[4..8] == b"ftyp" {
        return ftyp(b);
    }
    if b.starts_with(b"ID3") || mp3_frame(b).is_some() {
        return Some(Sniffed::Mp3);
    }
    // A PDF's header may follow up to 1024 bytes of other data (ISO 32000 §7.5.2, as readers do).
    let head = &b[..b.len().min(1024)];
    if memchr::memmem::find(head, b"%PDF-").is_some() {
        return Some(Sniffed::Pdf);
    }
    None
}

/// An ISO BMFF `ftyp` box: HEIC, HEIF or AVIF by its major and compatible brands.
fn ftyp(b: &[u8]) -> Option<Sniffed> {
    let end = (be32(b, 0)? as usize).min(b.len());
    let body = b.get(8..end.max(8))?;
    let brands = body.chunks_exact(4).enumerate().filter(|(i, _)| *i != 1); // [1] is the minor version
    let (mut heic, mut heif, mut avif) = (false, false, false);
    for (_, brand) in brands {
        heic |= HEIC_BRANDS.iter().any(|h| &h[..] == brand);
        heif |= brand == b"mif1" || brand == b"msf1" || brand == b"heif";
        avif |= brand == b"avif" || brand == b"avis";
    }
    match (heic, heif, avif) {
        (true, _, _) => Some(Sniffed::Heic),
        (false, _, true) => Some(Sniffed::Avif),
        (false, true, false) => Some(Sniffed::Heif),
        (false, false, false) => None,
    }
}

fn be16(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from(u16::from_be_bytes([
        *b.get(at)?,
        *b.get(at + 1)?,
    ])))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn le16(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from(u16::from_le_bytes([
        *b.get(at)?,
        *b.get(at + 1)?,
    ])))
}

fn le24(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes([
        *b.get(at)?,
        *b.get(at + 1)?,
        *b.get(at + 2)?,
        0,
    ]))
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Width and height of a PNG, JPEG, WebP, HEIC/HEIF or GIF image; `None` when the header is
/// missing, cut short or says 0.
pub fn dimensions(b: &[u8]) -> Option<(u32, u32)> {
    let (w, h) = match sniff(b)? {
        Sniffed::Png if b.get(12..16)? == b"IHDR" => (be32(b, 16)?, be32(b, 20)?),
        Sniffed::Jpeg => jpeg(b)?,
        Sniffed::Webp => webp(b)?,
        Sniffed::Heic | Sniffed::Heif | Sniffed::Avif => heif(b)?,
        Sniffed::Gif => (le16(b, 6)?, le16(b, 8)?),
        _ => return None,
    };
    (w > 0 && h > 0).then_some((w, h))
}

/// The first start-of-frame segment's size, walking the segments by their lengths (so EXIF
/// thumbnails inside APP1 are skipped), with fill bytes and stand-alone markers.
fn jpeg(b: &[u8]) -> Option<(u32, u32)> {
    let mut i = 2;
    loop {
        if *b.get(i)? != 0xff {
            return None;
        }
        let mut marker = *b.get(i + 1)?;
        while marker == 0xff {
            i += 1; // fill byte
            marker = *b.get(i + 1)?;
        }
        match marker {
            // Stand-alone markers: TEM, RST0-7, SOI.
            0x01 | 0xd0..=0xd8 => i += 2,
            // End of image or start of scan before any frame header: no size.
            0xd9 | 0xda => return None,
            0xc0..=0xcf if !matches!(marker, 0xc4 | 0xc8 | 0xcc) => {
                return Some((be16(b, i + 7)?, be16(b, i + 5)?));
            }
            _ => {
                let len = be16(b, i + 2)? as usize;
                if len < 2 {
                    return None;
                }
                i += 2 + len;
            }
        }
    }
}

/// The canvas of a lossy (`VP8 `), lossless (`VP8L`) or extended (`VP8X`) WebP.
fn webp(b: &[u8]) -> Option<(u32, u32)> {
    match b.get(12..16)? {
        b"VP8 " if b.get(23..26)? == [0x9d, 0x01, 0x2a] => {
            Some((le16(b, 26)? & 0x3fff, le16(b, 28)? & 0x3fff))
        }
        b"VP8L" if *b.get(20)? == 0x2f => {
            let bits = le32(b, 21)?;
            Some(((bits & 0x3fff) + 1, ((bits >> 14) & 0x3fff) + 1))
        }
        b"VP8X" => Some((le24(b, 24)? + 1, le24(b, 27)? + 1)),
        _ => None,
    }
}

/// ISO BMFF boxes of `b`: `(type, body)` for each whole box, in order.
fn boxes(b: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let mut rest = b;
    std::iter::from_fn(move || {
        let size = be32(rest, 0)? as usize;
        let kind = rest.get(4..8)?;
        let (start, end) = match size {
            0 => (8, rest.len()),
            1 => (
                16,
                usize::try_from(u64::from_be_bytes(rest.get(8..16)?.try_into().ok()?)).ok()?,
            ),
            n => (8, n),
        };
        if end < start {
            return None;
        }
        let body = rest.get(start..end)?;
        let (k, r) = (kind, &rest[end..]);
        rest = r;
        Some((k, body))
    })
}

/// The largest `ispe` (image spatial extents) property of a HEIF file: every image item's
/// size, the primary image's among them, so the largest is never below it.
fn heif(b: &[u8]) -> Option<(u32, u32)> {
    fn find<'a>(b: &'a [u8], want: &[u8]) -> Option<&'a [u8]> {
        boxes(b).find(|(k, _)| *k == want).map(|(_, body)| body)
    }
    let meta = find(b, b"meta")?;
    let iprp = find(meta.get(4..)?, b"iprp")?; // `meta` is a full box: version and flags first
    let ipco = find(iprp, b"ipco")?;
    boxes(ipco)
        .filter(|(k, _)| *k == b"ispe")
        .filter_map(|(_, body)| Some((be32(body, 4)?, be32(body, 8)?)))
        .max_by_key(|(w, h)| u64::from(*w) * u64::from(*h))
}

/// Microseconds of PCM audio in a WAV file: the bytes from the `data` chunk to the end of
/// what was sent, at the rate `fmt ` declares (a header's `data` size can lie or be a
/// streaming placeholder; trailing chunks only lengthen the bound). `None` for a compressed
/// format or a header that cannot be read.
pub fn wav_micros(b: &[u8]) -> Option<u64> {
    if b.get(..4)? != b"RIFF" || b.get(8..12)? != b"WAVE" {
        return None;
    }
    let mut i = 12;
    let mut rate: Option<u64> = None;
    loop {
        let kind = b.get(i..i + 4)?;
        let size = le32(b, i + 4)? as usize;
        let body = i + 8;
        if kind == b"fmt " {
            let format = le16(b, body)?;
            let channels = u64::from(le16(b, body + 2)?);
            let sample_rate = u64::from(le32(b, body + 4)?);
            let bits = u64::from(le16(b, body + 14)?);
            // PCM, IEEE float, or extensible (whose subformat is PCM or float in practice).
            if !matches!(format, 1 | 3 | 0xfffe) {
                return None;
            }
            let per_sec = sample_rate * channels * bits.div_ceil(8);
            rate = Some(per_sec).filter(|r| *r > 0);
        } else if kind == b"data" {
            let per_sec = rate?;
            let bytes = (b.len() - body.min(b.len())) as u64;
            return Some((bytes * 1_000_000).div_ceil(per_sec));
        }
        i = body.checked_add(size + (size & 1))?;
    }
}

/// One MPEG audio frame header at the start of `b`: (frame bytes, samples, sample rate).
fn mp3_frame(b: &[u8]) -> Option<(usize, u64, u64)> {
    let h = be32(b, 0)?;
    if h >> 21 != 0x7ff {
        return None;
    }
    let version = (h >> 19) & 3; // 0: MPEG 2.5, 2: MPEG 2, 3: MPEG 1
    let layer = (h >> 17) & 3; // 1: III, 2: II, 3: I
    let bitrate_index = ((h >> 12) & 0xf) as usize;
    let rate_index = ((h >> 10) & 3) as usize;
    if version == 1 || layer == 0 || bitrate_index == 0 || bitrate_index == 15 || rate_index == 3 {
        return None; // reserved values, or free format (no frame length to walk by)
    }
    let padding = ((h >> 9) & 1) as u64;
    let base = [44_100u64, 48_000, 32_000][rate_index];
    let rate = match version {
        3 => base,
        2 => base / 2,
        _ => base / 4,
    };
    const V1: [[u64; 14]; 3] = [
        [
            32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448,
        ],
        [
            32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384,
        ],
        [
            32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
        ],
    ];
    const V2: [[u64; 14]; 2] = [
        [
            32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256,
        ],
        [8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160],
    ];
    let i = bitrate_index - 1;
    let kbps = match (version, layer) {
        (3, 3) => V1[0][i],
        (3, 2) => V1[1][i],
        (3, _) => V1[2][i],
        (_, 3) => V2[0][i],
        _ => V2[1][i],
    };
    let bps = kbps * 1000;
    let (bytes, samples) = match (layer, version) {
        (3, _) => ((12 * bps / rate + padding) * 4, 384),
        (2, _) | (1, 3) => (144 * bps / rate + padding, 1152),
        _ => (72 * bps / rate + padding, 576),
    };
    Some((usize::try_from(bytes).ok()?.max(4), samples, rate))
}

/// Bytes per second of the thinnest MP3 stream a decoder accepts: a free-format mono MPEG 2.5
/// Layer III frame holds 576 samples at 8 kHz (72 ms) in as little as its 4-byte header and
/// 9 bytes of side information.
pub const MP3_MIN_BYTES_PER_SEC: u64 = 180;

/// Microseconds of an MP3 file, bounded from above: an ID3v2 tag is skipped, whole frames are
/// timed by their headers, and whatever cannot be walked frame by frame (free format, junk a
/// decoder would resync through) counts at `MP3_MIN_BYTES_PER_SEC`.
pub fn mp3_micros(b: &[u8]) -> u64 {
    let mut i = 0;
    if b.starts_with(b"ID3") && b.len() >= 10 {
        let size = b[6..10]
            .iter()
            .fold(0usize, |acc, x| (acc << 7) | usize::from(x & 0x7f));
        i = 10 + size + if b[5] & 0x10 != 0 { 10 } else { 0 };
    }
    let mut micros = 0u64;
    while i < b.len() {
        match mp3_frame(&b[i..]) {
            Some((len, samples, rate)) => {
                micros += (samples * 1_000_000).div_ceil(rate);
                i += len;
            }
            None => {
                let rest = (b.len() - i) as u64;
                // An ID3v1 tag closes many files: 128 bytes of text, no audio.
                if rest == 128 && b[i..].starts_with(b"TAG") {
                    break;
                }
                micros += (rest * 1_000_000).div_ceil(MP3_MIN_BYTES_PER_SEC);
                break;
            }
        }
    }
    micros
}

#[cfg(test)]
mod tests;
