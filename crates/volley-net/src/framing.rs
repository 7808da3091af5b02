//! Length-prefixed frames on QUIC streams: `[length u32][body]`.

use volley_proto::msg::frame_len;
use volley_proto::DecodeError;

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The stream ended cleanly before a new frame began.
    #[error("stream finished")]
    Finished,
    /// The stream failed or ended mid-frame.
    #[error("stream error: {0}")]
    Read(#[from] quinn::ReadExactError),
    /// The length prefix is over the limit.
    #[error("bad frame: {0}")]
    Decode(#[from] DecodeError),
}

/// Reads one frame body into `buf` (reused across calls to avoid an allocation per frame).
pub async fn read_frame(recv: &mut quinn::RecvStream, buf: &mut Vec<u8>) -> Result<(), FrameError> {
    let mut prefix = [0u8; 4];
    match recv.read_exact(&mut prefix).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Err(FrameError::Finished),
        Err(e) => return Err(e.into()),
    }
    let len = frame_len(prefix)?;
    buf.clear();
    buf.resize(len, 0);
    recv.read_exact(buf).await?;
    Ok(())
}
