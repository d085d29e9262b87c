//! LIST answers, decoded into typed items as their bytes arrive. Only the
//! fields an item type keeps are built, and a malformed item is handed
//! over by name instead of failing its page.

use std::io::Read;

use serde::{de::IgnoredAny, Deserialize};

use crate::{lenient, objects::ListItem, Malformed};

/// What a paged LIST hands its visitor.
#[derive(Debug)]
pub enum Visit<T> {
    /// The list starts over (its continue token expired, or an answer was
    /// cut off): forget what was visited so far.
    Restart,
    Item(T),
    /// An item that did not decode, by name (or `<unnamed>`).
    Skipped(String),
}

/// One decoded LIST page.
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Names (or `<unnamed>`) of items that did not decode as `T`.
    pub skipped: Vec<String>,
    /// The continue token, when more pages follow.
    pub next: Option<String>,
}

/// Decodes a whole LIST answer (see [`Incremental`]).
pub fn decode_page<T: ListItem>(bytes: &[u8]) -> Result<Page<T>, Malformed> {
    decode_pieces([bytes])
}

/// Decodes a LIST answer that arrives in `pieces`: the same result as
/// [`decode_page`] of them joined, wherever they are cut.
pub fn decode_pieces<'b, T: ListItem>(
    pieces: impl IntoIterator<Item = &'b [u8]>,
) -> Result<Page<T>, Malformed> {
    let (mut items, mut skipped) = (Vec::new(), Vec::new());
    let mut visit = |v| match v {
        Visit::Item(t) => items.push(t),
        Visit::Skipped(name) => skipped.push(name),
        Visit::Restart => {}
    };
    let mut page = Incremental::new(&mut visit);
    for piece in pieces {
        page.feed(piece)?;
    }
    let next = page.finish()?;
    Ok(Page {
        items,
        skipped,
        next,
    })
}

/// How much is asked of the reader at a time: what a connection's read
/// buffer holds (see `wire`).
const READ: usize = 16 * 1024;

/// A LIST answer decoded as its bytes arrive: each item is handed over as
/// soon as its last byte is in, so decoding overlaps the server's writing
/// of the rest (kube-apiserver writes a list item by item from 1.33,
/// KEP-5116), and no more than one read and one unfinished item are held.
///
/// The answer is a JSON object; its `items` (an array, or null) are
/// handed over one by one, `metadata.continue` is kept, and its other
/// members are checked and skipped. The result does not depend on how the
/// bytes are split (the `pv_list` fuzz target checks this against a
/// decoding of the whole): the framing here only finds where each member
/// name, member and item ends, and serde_json decodes, and so validates,
/// every one of them (an item whose bytes are all in hand is decoded where
/// it lies, and its end is where serde_json stopped). An answer that is not such an object, or not
/// well-formed → [`Malformed`] naming the byte it was found at (items
/// already handed over belong to a list that failed).
pub struct Incremental<'v, T> {
    buf: Vec<u8>,
    /// Bytes of `buf` already decoded.
    pos: usize,
    /// Bytes dropped from the front of `buf` so far.
    dropped: u64,
    state: State,
    /// The value that starts at `pos`, scanned so far.
    scan: Scan,
    next: Option<String>,
    visit: &'v mut dyn FnMut(Visit<T>),
}

/// What the next bytes must be.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    /// `{`.
    Open,
    /// A member name, or `}` if `first`.
    Name { first: bool },
    /// `:` after a member's name.
    Colon(Member),
    /// A member's value.
    Value(Member),
    /// An item, or `]` if `first`.
    Item { first: bool },
    /// `,` or `]` after an item.
    AfterItem,
    /// `,` or `}` after a member.
    AfterMember,
    /// Nothing but whitespace.
    Done,
}

/// Why reading a page stopped.
#[derive(Debug)]
pub enum ReadError {
    /// The body could not be read (cut off, timed out, over its limit).
    Read(std::io::Error),
    /// What was read is not a LIST answer.
    Decode(Malformed),
}

impl<'v, T: ListItem> Incremental<'v, T> {
    pub fn new(visit: &'v mut dyn FnMut(Visit<T>)) -> Self {
        Incremental {
            buf: Vec::new(),
            pos: 0,
            dropped: 0,
            state: State::Open,
            scan: Scan::default(),
            next: None,
            visit,
        }
    }

    /// Takes in the next bytes of the answer, handing over every item
    /// they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), Malformed> {
        self.compact();
        self.buf.extend_from_slice(bytes);
        self.run()
    }

    /// Reads `r` to its end (so that its connection can be kept) and
    /// decodes what it reads; the continue token, when more pages follow.
    pub fn read_all(mut self, r: &mut dyn Read) -> Result<Option<String>, ReadError> {
        let mut chunk = vec![0u8; READ];
        loop {
            let n = match r.read(&mut chunk) {
                Ok(0) => return self.finish().map_err(ReadError::Decode),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ReadError::Read(e)),
            };
            self.feed(&chunk[..n]).map_err(ReadError::Decode)?;
        }
    }

    /// The answer is over: the continue token, when more pages follow.
    pub fn finish(mut self) -> Result<Option<String>, Malformed> {
        self.skip_whitespace();
        if self.state != State::Done || self.pos < self.buf.len() {
            return Err(self.error("the answer ends before the LIST does"));
        }
        Ok(self.next.take().filter(|c| !c.is_empty()))
    }

    /// Drops what is decoded. What remains is at most one unfinished
    /// value, whose scan counts from its start and so stays valid.
    fn compact(&mut self) {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.dropped += self.pos as u64;
            self.pos = 0;
        }
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.buf.get(self.pos) {
            self.pos += 1;
        }
    }

    fn error(&self, what: &str) -> Malformed {
        Malformed(format!(
            "at byte {} of the answer: {what}",
            self.dropped + self.pos as u64
        ))
    }

    /// A punctuation byte the framing requires here.
    fn punctuation(&mut self, b: u8, then: &[(u8, State)], what: &str) -> Result<(), Malformed> {
        match then.iter().find(|(want, _)| *want == b) {
            Some(&(_, next)) => {
                self.pos += 1;
                self.state = next;
                Ok(())
            }
            None => Err(self.error(what)),
        }
    }

    /// The length of the value that starts at `pos`, once all of it is in.
    fn complete_value(&mut self) -> Option<usize> {
        self.scan.extent(&self.buf[self.pos..])
    }

    /// The item at `pos` and its length, decoded where it lies when all of
    /// it is in hand: most items are, and are then read once instead of
    /// being scanned for their end first. `None` when this cannot be
    /// told by decoding alone (the item is cut off, malformed, or ends
    /// only where a byte follows it, as a number does); the caller then
    /// finds its end with [`Scan`] and decodes it once that end is in.
    #[allow(clippy::type_complexity)]
    fn item_in_place(&self) -> Option<(serde_json::Result<Result<T, Option<String>>>, usize)> {
        let rest = &self.buf[self.pos..];
        if self.scan.off != 0 || !matches!(rest.first(), Some(b'{' | b'[' | b'"')) {
            return None;
        }
        let mut items = serde_json::Deserializer::from_slice(rest).into_iter::<InPlace<T>>();
        match items.next() {
            Some(Ok(InPlace(item))) => Some((Ok(item), items.byte_offset())),
            _ => None,
        }
    }

    /// Decodes as far as the bytes in hand allow.
    fn run(&mut self) -> Result<(), Malformed> {
        loop {
            // A value part-scanned resumes where it stopped; anything else
            // may follow whitespace.
            if self.scan.off == 0 {
                self.skip_whitespace();
            }
            let Some(&b) = self.buf.get(self.pos) else {
                return Ok(());
            };
            match self.state {
                State::Open => self.punctuation(
                    b,
                    &[(b'{', State::Name { first: true })],
                    "expected a LIST answer (an object with items)",
                )?,
                State::Name { first: true } if b == b'}' => {
                    self.pos += 1;
                    self.state = State::Done;
                }
                State::Name { .. } => {
                    if b != b'"' {
                        return Err(self.error("expected a member name"));
                    }
                    let Some(len) = self.complete_value() else {
                        return Ok(());
                    };
                    let name = exact(&self.buf[self.pos..self.pos + len], |de| {
                        Member::deserialize(de)
                    });
                    let name = name.map_err(|e| self.error(&e.to_string()))?;
                    self.pos += len;
                    self.state = State::Colon(name);
                }
                State::Colon(member) => self.punctuation(
                    b,
                    &[(b':', State::Value(member))],
                    "expected `:` after a member name",
                )?,
                // Entered before any scan of the value starts.
                State::Value(Member::Items) if b == b'[' => {
                    self.pos += 1;
                    self.state = State::Item { first: true };
                }
                State::Value(member) => {
                    let Some(len) = self.complete_value() else {
                        return Ok(());
                    };
                    let value = &self.buf[self.pos..self.pos + len];
                    let decoded = match member {
                        Member::Metadata => {
                            exact(value, |de| lenient::Obj::<ListMeta>::deserialize(de))
                                .map(|meta| self.next = meta.0.and_then(|m| m.next.0))
                        }
                        // Not an array: only null (no items) is one.
                        Member::Items => {
                            exact(value, |de| IgnoredAny::deserialize(de)).and_then(|_| match value
                            {
                                b"null" => Ok(()),
                                _ => Err(serde::de::Error::custom(
                                    "`items` is neither a list nor null",
                                )),
                            })
                        }
                        Member::Other => exact(value, |de| IgnoredAny::deserialize(de)).map(|_| ()),
                    };
                    decoded.map_err(|e| self.error(&e.to_string()))?;
                    self.pos += len;
                    self.state = State::AfterMember;
                }
                State::Item { first: true } if b == b']' => {
                    self.pos += 1;
                    self.state = State::AfterMember;
                }
                State::Item { .. } => {
                    let (item, len) = match self.item_in_place() {
                        Some(decoded) => decoded,
                        None => {
                            let Some(len) = self.complete_value() else {
                                return Ok(());
                            };
                            let value = &self.buf[self.pos..self.pos + len];
                            (exact(value, |de| T::decode(de)), len)
                        }
                    };
                    let item = item.map_err(|e| self.error(&e.to_string()))?;
                    (self.visit)(match item {
                        Ok(t) => Visit::Item(t),
                        Err(name) => Visit::Skipped(name.unwrap_or_else(|| "<unnamed>".into())),
                    });
                    self.pos += len;
                    self.state = State::AfterItem;
                }
                State::AfterItem => self.punctuation(
                    b,
                    &[
                        (b',', State::Item { first: false }),
                        (b']', State::AfterMember),
                    ],
                    "expected `,` or `]` after an item",
                )?,
                State::AfterMember => self.punctuation(
                    b,
                    &[(b',', State::Name { first: false }), (b'}', State::Done)],
                    "expected `,` or `}` after a member",
                )?,
                State::Done => return Err(self.error("trailing characters after the LIST")),
            }
        }
    }
}

/// `decode` over the whole of `value` and nothing else.
fn exact<'a, R>(
    value: &'a [u8],
    decode: impl FnOnce(
        &mut serde_json::Deserializer<serde_json::de::SliceRead<'a>>,
    ) -> serde_json::Result<R>,
) -> serde_json::Result<R> {
    let mut de = serde_json::Deserializer::from_slice(value);
    let r = decode(&mut de)?;
    de.end()?;
    Ok(r)
}

/// A list item as a `Deserialize`, for serde_json's stream reader, which
/// tells where a value it read ended.
struct InPlace<T>(Result<T, Option<String>>);

impl<'de, T: ListItem> Deserialize<'de> for InPlace<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::decode(d).map(InPlace)
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ListMeta {
    #[serde(rename = "continue")]
    next: lenient::Str,
}

/// A member name of a LIST answer, told apart without being copied.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Member {
    Metadata,
    Items,
    Other,
}

impl<'de> Deserialize<'de> for Member {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct K;
        impl serde::de::Visitor<'_> for K {
            type Value = Member;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a member name")
            }
            fn visit_str<E>(self, s: &str) -> Result<Member, E> {
                Ok(match s {
                    "metadata" => Member::Metadata,
                    "items" => Member::Items,
                    _ => Member::Other,
                })
            }
        }
        d.deserialize_str(K)
    }
}

/// Where a JSON value ends, found without decoding it: strings and
/// nesting are followed, nothing is checked (serde_json checks the value
/// once its extent is known). Resumable: a value cut off by the end of
/// the bytes in hand is scanned on from where it stopped.
#[derive(Default, Debug)]
struct Scan {
    /// Bytes of the value scanned so far; 0 before it starts.
    off: usize,
    /// Open objects and arrays.
    depth: u32,
    in_string: bool,
    escaped: bool,
}

impl Scan {
    /// The length of the value at the start of `b` (which is not empty
    /// and starts with the value's first byte), or `None` while its end
    /// is not in `b`. A number, `true`, `false` or `null` ends at the
    /// first byte that can follow a value; one at the very end of `b` is
    /// not known to be whole, so waits for more.
    fn extent(&mut self, b: &[u8]) -> Option<usize> {
        if !matches!(b[0], b'{' | b'[' | b'"') {
            return match b[self.off..]
                .iter()
                .position(|c| matches!(c, b',' | b']' | b'}' | b' ' | b'\t' | b'\n' | b'\r'))
            {
                Some(p) => {
                    let len = self.off + p;
                    *self = Scan::default();
                    Some(len)
                }
                None => {
                    self.off = b.len();
                    None
                }
            };
        }
        let mut i = self.off;
        while i < b.len() {
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                    i += 1;
                    continue;
                }
                // Most of a value's bytes are in its strings.
                let Some(p) = memchr::memchr2(b'"', b'\\', &b[i..]) else {
                    i = b.len();
                    break;
                };
                i += p;
                if b[i] == b'\\' {
                    self.escaped = true;
                } else {
                    self.in_string = false;
                }
            } else {
                match b[i] {
                    b'"' => self.in_string = true,
                    b'{' | b'[' => self.depth += 1,
                    // Cannot underflow: the value starts with `{`, `[` or
                    // `"`, and ends as soon as the depth is back to 0.
                    b'}' | b']' => self.depth -= 1,
                    _ => {}
                }
            }
            i += 1;
            if self.depth == 0 && !self.in_string {
                *self = Scan::default();
                return Some(i);
            }
        }
        self.off = i;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PvSummary;

    const PAGE: &[u8] = br#"{"kind":"PersistentVolumeList","apiVersion":"v1",
        "metadata":{"resourceVersion":"7","continue":"eyJ2\u003d\/x","remainingItemCount":3},
        "items":[
            {"metadata":{"name":"good","annotations":{"a]":"}\"{"}},"spec":{"csi":{"driver":"d","volumeHandle":"h"}}},
            {"metadata":{"name":"bad","annotations":"not a map"}},
            {"metadata":{"name":"num","uid":-1.5e+3,"labels":{"k":"\u00e9"}},"spec":{"csi":{"driver":"d","volumeHandle":"n"}}},
            [1,2,3], 17, "s", null]}"#;

    fn names(page: &Page<PvSummary>) -> Vec<&str> {
        page.items.iter().map(|p| p.name.as_str()).collect()
    }

    #[test]
    fn a_page_skips_and_names_malformed_items_and_unescapes_the_token() {
        let page = decode_page::<PvSummary>(PAGE).unwrap();
        assert_eq!(names(&page), ["good", "num"]);
        assert_eq!(page.items[0].volume_handle, "h");
        assert_eq!(
            page.skipped,
            ["bad", "<unnamed>", "<unnamed>", "<unnamed>", "<unnamed>"]
        );
        assert_eq!(page.next.as_deref(), Some("eyJ2=/x"));
        let last = decode_page::<PvSummary>(br#"{"metadata":{"continue":""},"items":[]}"#).unwrap();
        assert_eq!(last.next, None);
        let none = decode_page::<PvSummary>(br#" { "items" : null } "#).unwrap();
        assert!(none.items.is_empty() && none.skipped.is_empty());
    }

    #[test]
    fn a_page_split_anywhere_decodes_the_same() {
        let whole = decode_page::<PvSummary>(PAGE).unwrap();
        for cut in 0..=PAGE.len() {
            for step in [1, 7, PAGE.len()] {
                let (head, tail) = PAGE.split_at(cut);
                let pieces = std::iter::once(head).chain(tail.chunks(step));
                let page = decode_pieces::<PvSummary>(pieces).unwrap();
                assert_eq!(page.items, whole.items, "cut {cut}, step {step}");
                assert_eq!(
                    (page.skipped, page.next),
                    (whole.skipped.clone(), whole.next.clone())
                );
            }
        }
    }

    #[test]
    fn what_is_not_a_list_answer_is_refused_where_it_goes_wrong() {
        for (body, at) in [
            (&b"[]"[..], "at byte 0"),
            (b"", "at byte 0"),
            (br#"{"items":[{"metadata":{}}"#, "at byte 25"),
            (br#"{"items":[{"metadata":{}} {}]}"#, "at byte 26"),
            (br#"{"items":{}}"#, "neither a list nor null"),
            (br#"{"items":[tru]}"#, "at byte 10"),
            (br#"{"items":[{"a":}]}"#, "at byte 10"),
            (br#"{"kind":"x" "items":[]}"#, "at byte 12"),
            (br#"{"kind" "x"}"#, "at byte 8"),
            (br#"{kind:1}"#, "member name"),
            (br#"{"items":[]} x"#, "trailing"),
            (br#"{"items":[],}"#, "at byte 12"),
        ] {
            match decode_page::<PvSummary>(body) {
                Err(Malformed(m)) => assert!(m.contains(at), "{body:?}: {m}"),
                other => panic!("{body:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_body_is_read_to_its_end() {
        let item =
            br#"{"metadata":{"name":"pv-0000"},"spec":{"csi":{"driver":"d","volumeHandle":"h"}}}"#;
        let mut body = b"{\"items\":[".to_vec();
        for i in 0..2000 {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(item);
        }
        body.extend_from_slice(br#"],"metadata":{"continue":"next"}}"#);
        let mut seen = 0;
        let mut visit = |v| {
            assert!(matches!(v, Visit::Item(_)));
            seen += 1;
        };
        let page = Incremental::<PvSummary>::new(&mut visit);
        let mut reader = Trickle(&body, 0);
        let next = page.read_all(&mut reader).unwrap();
        assert_eq!((seen, next.as_deref()), (2000, Some("next")));
        // Asked again after the last byte: its end was read.
        assert_eq!(reader.1, 1);

        /// A body that arrives 1 000 bytes at a time, counting the reads
        /// made after its end.
        struct Trickle<'a>(&'a [u8], usize);
        impl Read for Trickle<'_> {
            fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
                let n = out.len().min(self.0.len()).min(1000);
                out[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                self.1 += usize::from(n == 0);
                Ok(n)
            }
        }
    }
}
