//! Tests of the media header readers: each format's header, the ways headers lie or end early,
//! and arbitrary bytes (never a panic).

use proptest::prelude::*;

use super::*;

fn png(w: u32, h: u32) -> Vec<u8> {
    let mut b = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
    b.extend_from_slice(&w.to_be_bytes());
    b.extend_from_slice(&h.to_be_bytes());
    b.extend_from_slice(&[8, 6, 0, 0, 0, 0, 0, 0, 0]);
    b
}

fn segment(marker: u8, body: &[u8]) -> Vec<u8> {
    let mut s = vec![0xff, marker];
    s.extend_from_slice(&((body.len() + 2) as u16).to_be_bytes());
    s.extend_from_slice(body);
    s
}

fn sof(w: u16, h: u16) -> Vec<u8> {
    let mut body = vec![8];
    body.extend_from_slice(&h.to_be_bytes());
    body.extend_from_slice(&w.to_be_bytes());
    body.extend_from_slice(&[3, 1, 0x22, 0]);
    segment(0xc0, &body)
}

fn jpeg(parts: &[Vec<u8>]) -> Vec<u8> {
    let mut b = vec![0xff, 0xd8];
    for p in parts {
        b.extend_from_slice(p);
    }
    b.extend_from_slice(&[0xff, 0xd9]);
    b
}

fn riff(form: &[u8; 4], chunks: &[(&[u8; 4], Vec<u8>)]) -> Vec<u8> {
    let mut body = form.to_vec();
    for (id, data) in chunks {
        body.extend_from_slice(*id);
        body.extend_from_slice(&(data.len() as u32).to_le_bytes());
        body.extend_from_slice(data);
        if data.len() % 2 == 1 {
            body.push(0);
        }
    }
    let mut b = b"RIFF".to_vec();
    b.extend_from_slice(&(body.len() as u32).to_le_bytes());
    b.extend_from_slice(&body);
    b
}

fn bmff(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut b = ((body.len() + 8) as u32).to_be_bytes().to_vec();
    b.extend_from_slice(kind);
    b.extend_from_slice(body);
    b
}

fn ispe(w: u32, h: u32) -> Vec<u8> {
    let mut body = vec![0; 4];
    body.extend_from_slice(&w.to_be_bytes());
    body.extend_from_slice(&h.to_be_bytes());
    bmff(b"ispe", &body)
}

fn heif(brands: &[&[u8; 4]], sizes: &[(u32, u32)]) -> Vec<u8> {
    let mut ftyp = brands[0].to_vec();
    ftyp.extend_from_slice(&[0, 0, 0, 0]);
    for b in brands {
        ftyp.extend_from_slice(*b);
    }
    let ipco: Vec<u8> = sizes.iter().flat_map(|(w, h)| ispe(*w, *h)).collect();
    let mut meta = vec![0; 4];
    meta.extend_from_slice(&bmff(b"hdlr", &[0; 24]));
    meta.extend_from_slice(&bmff(b"iprp", &bmff(b"ipco", &ipco)));
    let mut b = bmff(b"ftyp", &ftyp);
    b.extend_from_slice(&bmff(b"meta", &meta));
    b
}

fn wav(format: u16, channels: u16, rate: u32, bits: u16, data: usize) -> Vec<u8> {
    let mut fmt = format.to_le_bytes().to_vec();
    fmt.extend_from_slice(&channels.to_le_bytes());
    fmt.extend_from_slice(&rate.to_le_bytes());
    let block = channels * bits.div_ceil(8);
    fmt.extend_from_slice(&(rate * u32::from(block)).to_le_bytes());
    fmt.extend_from_slice(&block.to_le_bytes());
    fmt.extend_from_slice(&bits.to_le_bytes());
    riff(b"WAVE", &[(b"fmt ", fmt), (b"data", vec![0; data])])
}

/// `n` MPEG-1 Layer III frames at 128 kbit/s, 44.1 kHz: 417 bytes and 1152 samples each.
fn mp3_frames(n: usize) -> Vec<u8> {
    let mut frame = vec![0xff, 0xfb, 0x90, 0x00];
    frame.resize(417, 0);
    frame.repeat(n)
}

#[test]
fn formats_are_told_apart_by_their_magic() {
    assert_eq!(sniff(&png(1, 1)), Some(Sniffed::Png));
    assert_eq!(sniff(&jpeg(&[sof(1, 1)])), Some(Sniffed::Jpeg));
    assert_eq!(sniff(&riff(b"WEBP", &[])), Some(Sniffed::Webp));
    assert_eq!(sniff(&wav(1, 1, 8000, 8, 10)), Some(Sniffed::Wav));
    assert_eq!(sniff(b"GIF89a\x01\x00\x01\x00"), Some(Sniffed::Gif));
    assert_eq!(sniff(&heif(&[b"heic", b"mif1"], &[])), Some(Sniffed::Heic));
    assert_eq!(sniff(&heif(&[b"mif1", b"miaf"], &[])), Some(Sniffed::Heif));
    assert_eq!(sniff(&heif(&[b"avif", b"mif1"], &[])), Some(Sniffed::Avif));
    assert_eq!(
        sniff(&heif(&[b"isom", b"mp41"], &[])),
        None,
        "an MP4 is not an image"
    );
    assert_eq!(
        sniff(b"ID3\x04\x00\x00\x00\x00\x00\x00"),
        Some(Sniffed::Mp3)
    );
    assert_eq!(sniff(&mp3_frames(1)), Some(Sniffed::Mp3));
    assert_eq!(sniff(b"%PDF-1.7\n%..."), Some(Sniffed::Pdf));
    let mut late = vec![b' '; 500];
    late.extend_from_slice(b"%PDF-1.4");
    assert_eq!(
        sniff(&late),
        Some(Sniffed::Pdf),
        "a header within 1024 bytes"
    );
    let mut too_late = vec![b' '; 1100];
    too_late.extend_from_slice(b"%PDF-1.4");
    assert_eq!(sniff(&too_late), None);
    assert_eq!(sniff(b"<svg xmlns='http://www.w3.org/2000/svg'/>"), None);
    assert_eq!(sniff(b""), None);
}

#[test]
fn png_gif_and_webp_sizes() {
    assert_eq!(dimensions(&png(1000, 800)), Some((1000, 800)));
    assert_eq!(dimensions(&png(0, 800)), None, "0 is no size");
    assert_eq!(dimensions(&png(5, 5)[..20]), None, "cut short");
    assert_eq!(dimensions(b"GIF89a\x20\x03\x58\x02"), Some((800, 600)));
    let mut vp8 = vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a];
    vp8.extend_from_slice(&(640u16 | 0xc000).to_le_bytes()); // scale bits are not size
    vp8.extend_from_slice(&480u16.to_le_bytes());
    assert_eq!(
        dimensions(&riff(b"WEBP", &[(b"VP8 ", vp8)])),
        Some((640, 480))
    );
    let (w, h) = (1919u32, 1079u32); // stored minus one
    let bits = w | (h << 14);
    let mut vp8l = vec![0x2f];
    vp8l.extend_from_slice(&bits.to_le_bytes());
    assert_eq!(
        dimensions(&riff(b"WEBP", &[(b"VP8L", vp8l)])),
        Some((1920, 1080))
    );
    let mut vp8x = vec![0x10, 0, 0, 0];
    vp8x.extend_from_slice(&(4095u32).to_le_bytes()[..3]);
    vp8x.extend_from_slice(&(2999u32).to_le_bytes()[..3]);
    assert_eq!(
        dimensions(&riff(b"WEBP", &[(b"VP8X", vp8x)])),
        Some((4096, 3000))
    );
}

#[test]
fn jpeg_sizes_come_from_the_frame_header_not_from_thumbnails() {
    let app0 = segment(0xe0, b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0");
    // An EXIF thumbnail: a whole JPEG inside APP1, with its own small frame header.
    let mut exif = b"Exif\0\0".to_vec();
    exif.extend_from_slice(&jpeg(&[sof(160, 120)]));
    let app1 = segment(0xe1, &exif);
    let dqt = segment(0xdb, &[0; 65]);
    let b = jpeg(&[app0.clone(), app1, dqt.clone(), sof(4032, 3024)]);
    assert_eq!(dimensions(&b), Some((4032, 3024)));
    // Fill bytes before a marker, and a restart marker, are stepped over.
    let mut filled = vec![0xff, 0xff];
    filled.extend_from_slice(&sof(800, 600));
    assert_eq!(
        dimensions(&jpeg(&[app0.clone(), vec![0xff, 0xd0], filled])),
        Some((800, 600))
    );
    // A scan before any frame header, a zero height (DNL), a broken length: no size.
    assert_eq!(
        dimensions(&jpeg(&[segment(0xda, &[0; 10]), sof(5, 5)])),
        None
    );
    assert_eq!(dimensions(&jpeg(&[sof(800, 0)])), None);
    assert_eq!(dimensions(&jpeg(&[vec![0xff, 0xe0, 0x00, 0x01]])), None);
    assert_eq!(dimensions(&jpeg(&[app0, dqt])), None);
}

#[test]
fn heif_takes_the_largest_image_extent() {
    let b = heif(&[b"heic", b"mif1"], &[(512, 512), (4032, 3024), (160, 120)]);
    assert_eq!(dimensions(&b), Some((4032, 3024)));
    assert_eq!(dimensions(&heif(&[b"heic"], &[])), None);
}

#[test]
fn wav_length_from_the_format_and_the_bytes_sent() {
    // 16 kHz mono 16-bit: 32,000 bytes a second.
    assert_eq!(wav_micros(&wav(1, 1, 16_000, 16, 32_000)), Some(1_000_000));
    assert_eq!(
        wav_micros(&wav(1, 2, 44_100, 16, 176_400 * 3)),
        Some(3_000_000)
    );
    assert_eq!(
        wav_micros(&wav(3, 1, 48_000, 32, 100)),
        Some(521),
        "float, rounded up"
    );
    // A `data` size that lies (streaming placeholder): the bytes present count.
    let mut lying = wav(1, 1, 8_000, 8, 8_000);
    let at = lying.len() - 8_000 - 4;
    lying[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(wav_micros(&lying), Some(1_000_000));
    assert_eq!(
        wav_micros(&wav(2, 1, 8_000, 4, 100)),
        None,
        "ADPCM: not timed"
    );
    assert_eq!(wav_micros(&wav(1, 1, 0, 16, 100)), None, "no rate");
    assert_eq!(wav_micros(&riff(b"WAVE", &[(b"data", vec![0; 10])])), None);
}

#[test]
fn mp3_length_walks_the_frames() {
    let per_frame = (1152u64 * 1_000_000).div_ceil(44_100);
    assert_eq!(mp3_micros(&mp3_frames(10)), 10 * per_frame);
    // An ID3v2 tag first (syncsafe size 0x0101 = 129 bytes) and an ID3v1 tag last.
    let mut tagged = b"ID3\x04\x00\x00\x00\x00\x01\x01".to_vec();
    tagged.extend_from_slice(&[0; 129]);
    tagged.extend_from_slice(&mp3_frames(3));
    tagged.extend_from_slice(b"TAG");
    tagged.extend_from_slice(&[0; 125]);
    assert_eq!(mp3_micros(&tagged), 3 * per_frame);
    // What cannot be walked counts at the thinnest stream a decoder takes.
    let mut junk = mp3_frames(2);
    junk.extend_from_slice(&[0x55; 180]);
    assert_eq!(mp3_micros(&junk), 2 * per_frame + 1_000_000);
    // An MPEG-2.5 Layer III frame at 8 kbit/s, 8 kHz: 72 bytes, 576 samples.
    let mut low = vec![0xff, 0xe3, 0x18, 0x00];
    low.resize(72, 0);
    assert_eq!(mp3_micros(&low.repeat(5)), 5 * 72_000);
}

proptest! {
    #[test]
    fn readers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = sniff(&bytes);
        let _ = dimensions(&bytes);
        let _ = wav_micros(&bytes);
        let _ = mp3_micros(&bytes);
    }

    #[test]
    fn readers_never_panic_on_mangled_headers(
        at in 0usize..64, byte in any::<u8>(), cut in 0usize..80,
    ) {
        for mut b in [
            png(300, 200),
            jpeg(&[sof(800, 600)]),
            heif(&[b"heic"], &[(10, 10)]),
            wav(1, 1, 8000, 8, 16),
            mp3_frames(2),
        ] {
            if at < b.len() {
                b[at] = byte;
            }
            b.truncate(cut.max(1));
            let _ = (dimensions(&b), wav_micros(&b), mp3_micros(&b));
        }
    }
}
