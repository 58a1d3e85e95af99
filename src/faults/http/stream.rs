//! Byte-level pieces of the proxy: a stream with bytes put back in front of it, the HTTP/1
//! request-line sniff, who talks first, and the splice for everything that is not HTTP/1.
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// A byte stream the proxy can hold in a box.
pub(super) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
pub(super) type BoxIo = Box<dyn Io>;

/// How many bytes the sniff reads at most before it calls the stream "not HTTP/1".
pub(super) const SNIFF_LIMIT: usize = 64 * 1024;

/// `inner`, with `prefix` read first (bytes consumed while sniffing).
pub(super) struct Prefixed<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Prefixed<S> {
    pub(super) fn new(prefix: Bytes, inner: S) -> Self {
        Prefixed { prefix, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// What the first bytes of a connection are.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Sniff {
    /// An HTTP/1.0 or HTTP/1.1 request line.
    Http,
    /// Anything else (HTTP/2 prior knowledge included).
    NotHttp,
    /// Too early to tell.
    More,
}

fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

/// Classifies the start of a client stream: `METHOD SP target SP HTTP/1.x CRLF`, after
/// optional empty lines (RFC 9112 section 2.2).
pub(super) fn sniff(buf: &[u8]) -> Sniff {
    let start = buf
        .iter()
        .position(|c| *c != b'\r' && *c != b'\n')
        .unwrap_or(buf.len());
    let b = &buf[start..];
    let m = b.iter().position(|c| !is_tchar(*c)).unwrap_or(b.len());
    if m > 32 {
        return Sniff::NotHttp;
    }
    if m == b.len() {
        return Sniff::More;
    }
    if m == 0 || b[m] != b' ' {
        return Sniff::NotHttp;
    }
    let rest = &b[m + 1..];
    let Some(t) = rest.iter().position(|c| *c <= b' ' || *c == 0x7f) else {
        return Sniff::More;
    };
    if t == 0 || rest[t] != b' ' {
        return Sniff::NotHttp;
    }
    let version = &rest[t + 1..];
    let mut more = false;
    for want in [
        &b"HTTP/1.1\r\n"[..],
        b"HTTP/1.0\r\n",
        b"HTTP/1.1\n",
        b"HTTP/1.0\n",
    ] {
        if version.starts_with(want) {
            return Sniff::Http;
        }
        more |= want.starts_with(version);
    }
    if more {
        Sniff::More
    } else {
        Sniff::NotHttp
    }
}

/// Who sent bytes first.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum First {
    Client,
    /// The client closed without sending anything.
    ClientEof,
    /// The server spoke first (or closed): not a protocol the proxy reads.
    Upstream,
}

/// Waits for the first bytes from either side, into `cbuf` or `ubuf`.
pub(super) async fn first_bytes<C, U>(
    client: &mut C,
    cbuf: &mut BytesMut,
    upstream: &mut U,
    ubuf: &mut BytesMut,
) -> io::Result<First>
where
    C: AsyncRead + Unpin,
    U: AsyncRead + Unpin,
{
    // `read_buf` is cancel safe: the branch that loses read nothing.
    tokio::select! {
        n = client.read_buf(cbuf) => Ok(if n? == 0 { First::ClientEof } else { First::Client }),
        n = upstream.read_buf(ubuf) => { n?; Ok(First::Upstream) }
    }
}

/// Copies bytes both ways until both sides are done, after handing each side what was read
/// from the other while sniffing.
pub(super) async fn splice<C, U>(
    mut client: C,
    from_client: &[u8],
    mut upstream: U,
    from_upstream: &[u8],
) -> io::Result<()>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    upstream.write_all(from_client).await?;
    client.write_all(from_upstream).await?;
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_request_lines() {
        use Sniff::*;
        for (bytes, want) in [
            (&b"GET / HTTP/1.1\r\n"[..], Http),
            (b"\r\nPOST /a?b=c HTTP/1.0\r\nHost: x\r\n", Http),
            (b"M-SEARCH * HTTP/1.1\n", Http),
            (b"GET http://h/p HTTP/1.1\r\n", Http),
            (b"", More),
            (b"GE", More),
            (b"GET ", More),
            (b"GET /very/long", More),
            (b"GET / HTT", More),
            (b"GET / HTTP/1.1\r", More),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", NotHttp),
            (b"\x16\x03\x01\x02\x00", NotHttp),
            (b"PING\r\n", NotHttp),
            (b"SSH-2.0-OpenSSH_9.2 Debian\r\n", NotHttp),
            (b"GET  / HTTP/1.1\r\n", NotHttp),
            (b"GET / HTTP/1.2\r\n", NotHttp),
            (b"GET /\x01 HTTP/1.1\r\n", NotHttp),
            (&[b'A'; 40][..], NotHttp),
        ] {
            assert_eq!(sniff(bytes), want, "{:?}", String::from_utf8_lossy(bytes));
        }
    }

    #[tokio::test]
    async fn prefixed_reads_the_prefix_first() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(b" world").await.unwrap();
        drop(a);
        let mut p = Prefixed::new(Bytes::from_static(b"hello"), b);
        let mut s = String::new();
        p.read_to_string(&mut s).await.unwrap();
        assert_eq!(s, "hello world");
    }
}
