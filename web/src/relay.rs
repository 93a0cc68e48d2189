//! `GET /api/cluster/relay`: another server of the database reaching a tunnel client connected
//! here (SPEC §13). Each request is one stream: a WebSocket whose binary messages are spliced
//! to a new stream of the client's own connection. Servers authenticate with the relay key
//! they all derive from the shared token secret ([`crate::server::RELAY_KEY_LABEL`]); no user
//! token is involved, and only clients connected to this server are reachable (never relayed
//! again).

use crate::api::AppState;
use crate::error::ApiError;
use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::Message;
use engine::tunnel::relay::KEY_HEADER;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tunnel::headers;

/// The relay key of this database's servers (hex).
pub struct RelayKey(pub String);

fn header<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

#[utoipa::path(get, path = "/api/cluster/relay", tag = "health",
    responses(
        (status = 101, description = "WebSocket upgrade: one stream to the tunnel client named by the x-eventops-user, x-eventops-client-id and x-eventops-machine-label headers, for another server of the database (x-eventops-relay-key)"),
        (status = 400, description = "Not a WebSocket upgrade, or a header missing or longer than 128 characters", body = crate::openapi::Failure),
        (status = 401, description = "No relay key, or not this database's", body = crate::openapi::Failure),
        (status = 404, description = "That client is not connected to this server", body = crate::openapi::Failure),
        (status = 503, description = "The client's connection did not open a stream", body = crate::openapi::Failure)))]
pub async fn relay(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
    key: web::Data<RelayKey>,
) -> Result<HttpResponse, ApiError> {
    match header(&req, KEY_HEADER) {
        Some(k) if engine::secrets::same(k, &key.0) => {}
        _ => {
            return Err(ApiError::Unauthorized(
                "relay refused: only the servers of this database may relay".into(),
            ))
        }
    }
    // user names, client ids and labels are at most 128 characters wherever they are made: a
    // longer one is no server's, and is not echoed back
    let need = |name: &str| match header(&req, name) {
        None => Err(ApiError::BadRequest(format!("missing header {name}"))),
        Some(v) if v.chars().count() > engine::definition::MAX_NAME => {
            Err(ApiError::BadRequest(format!(
                "header {name} is longer than {} characters",
                engine::definition::MAX_NAME
            )))
        }
        Some(v) => Ok(v.to_string()),
    };
    let (user, id, label) = (
        need(headers::USER)?,
        need(headers::CLIENT_ID)?,
        need(headers::LABEL)?,
    );
    let client = state
        .engine
        .tunnels
        .connected_here(&user, &id, &label)
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "tunnel client {id} ({label}) of {user} is not connected to this server"
            ))
        })?;
    // the handshake is checked before a stream of the client's connection is opened (nothing
    // is answered until the response goes back, so a failed open is still a 503)
    let (resp, session, msgs) = actix_ws::handle(&req, body)
        .map_err(|e| ApiError::BadRequest(format!("not a WebSocket handshake: {e}")))?;
    let stream = client
        .open()
        .await
        .map_err(|e| ApiError::Unavailable(format!("tunnel client {}: {e}", client.name())))?;
    let msgs = msgs.max_frame_size(2 * tunnel::pipe::MAX_MESSAGE);
    actix_web::rt::spawn(splice(stream, session, msgs));
    Ok(resp)
}

/// Copies both ways until either side ends.
async fn splice(
    stream: engine::tunnel::Stream,
    mut session: actix_ws::Session,
    mut msgs: actix_ws::MessageStream,
) {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        tokio::select! {
            n = rd.read(&mut buf) => match n {
                Ok(n) if n > 0 => {
                    let chunk = Bytes::copy_from_slice(buf.get(..n).unwrap_or_default());
                    if session.binary(chunk).await.is_err() {
                        break;
                    }
                }
                _ => break,
            },
            msg = msgs.recv() => match msg {
                Some(Ok(Message::Binary(b))) => {
                    if wr.write_all(&b).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Ping(p))) => {
                    let _ = session.pong(&p).await;
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
    let _ = wr.shutdown().await;
    let _ = session.close(None).await;
}
