//! `GET /api/dialer/connect`: where `eventops-client` connects (SPEC §9).
//!
//! The handshake carries the client id, token, user and machine label in headers
//! ([`tunnel::headers`]); they are checked against the user's actuator definitions whose
//! `tunnel.clientId` matches (tokens are stored argon2-hashed, checked on the bounded hasher;
//! failures are limited like logins). A refused client gets one public message whatever the
//! reason (so client ids cannot be probed); the precise reason is logged. An accepted one becomes a yamux session
//! over the WebSocket, registered in the engine's [`engine::tunnel::Tunnels`].

use crate::api::AppState;
use crate::error::ApiError;
use crate::limiter::{Limiter, Realm};
use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{CloseCode, CloseReason, Message};
use engine::tunnel::{Client, ClientInfo};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tunnel::headers;

/// Tokens already verified against a stored hash: sha256(hash ‖ token). A reconnecting fleet
/// costs one argon2 check per token, not one per connection.
#[derive(Default)]
pub struct Verified(Mutex<HashSet<[u8; 32]>>);

fn header<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

fn refuse(peer: &str, why: String) -> ApiError {
    log::warn!("tunnel: refused client from {peer}: {why}");
    ApiError::Unauthorized(REFUSED.into())
}

#[utoipa::path(get, path = "/api/dialer/connect", tag = "tunnel",
    responses(
        (status = 101, description = "WebSocket upgrade: the tunnel (yamux over binary frames); the client id, token, user and label come in headers (eventops-client sends them)"),
        (status = 400, description = "Not a WebSocket upgrade, or a bad handshake", body = crate::openapi::Failure),
        (status = 401, description = "Unknown client or wrong client token", body = crate::openapi::Failure),
        (status = 429, description = "Too many failed handshakes", body = crate::openapi::Failure)))]
pub async fn connect(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
    verified: web::Data<Verified>,
    hasher: web::Data<engine::users::Hasher>,
    limiter: web::Data<Limiter>,
) -> Result<HttpResponse, ApiError> {
    let peer = req
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|| "?".into());
    let need = |name: &str, flag: &str| {
        header(&req, name).ok_or_else(|| {
            log::warn!("tunnel: refused client from {peer}: no {name} header");
            ApiError::BadRequest(format!(
                "missing header {name} (eventops-client {flag}); connect with eventops-client"
            ))
        })
    };
    let client_id = need(headers::CLIENT_ID, "--id")?.to_string();
    let token = need(headers::CLIENT_TOKEN, "--token")?.to_string();
    let user = need(headers::USER, "--user")?.to_string();
    let label = header(&req, headers::LABEL)
        .unwrap_or(&client_id)
        .to_string();
    // what the database cannot hold (NUL), a name could hide behind, or a header no client
    // sends (64 KiB ids): refused before any lookup, alike on every backend, and not echoed
    let max = engine::definition::MAX_NAME;
    for (name, value) in [
        (headers::CLIENT_ID, &client_id),
        (headers::USER, &user),
        (headers::LABEL, &label),
    ] {
        if value.chars().count() > max {
            return Err(ApiError::BadRequest(format!(
                "header {name}: longer than {max} characters"
            )));
        }
        if value.chars().any(engine::definition::is_hidden_char) {
            return Err(ApiError::BadRequest(format!(
                "header {name}: contains a control, bidi or zero-width character"
            )));
        }
    }
    authorise(
        &state,
        &verified,
        &hasher,
        &limiter,
        crate::limiter::peer_ip(&req),
        (&user, &client_id, &token),
    )
    .await?;
    let info = ClientInfo {
        owner: user,
        client_id,
        label,
        address: peer,
        version: header(&req, headers::VERSION)
            .unwrap_or("")
            .chars()
            .take(64)
            .collect(),
        run_as: header(&req, headers::RUN_AS)
            .unwrap_or("")
            .chars()
            .take(64)
            .collect(),
    };
    let (resp, session, stream) = actix_ws::handle(&req, body)
        .map_err(|e| ApiError::BadRequest(format!("not a WebSocket handshake: {e}")))?;
    let stream = stream.max_frame_size(2 * tunnel::pipe::MAX_MESSAGE);
    actix_web::rt::spawn(serve(state.into_inner(), info, session, stream));
    Ok(resp)
}

/// What a refused client is told, whatever the reason (an unknown user, an unknown client id
/// or a wrong token), so client ids cannot be probed; the reason goes to the server log.
pub const REFUSED: &str =
    "tunnel client refused: unknown user or client id, or wrong token (the server log says which)";

/// The user's actuators with this client id; the token must match one of their hashes. A
/// token verified before is accepted from the cache; any other check is charged to the
/// failed-attempt limiter (429 while locked) and runs on the bounded hasher (503 when full).
async fn authorise(
    state: &AppState,
    verified: &Verified,
    hasher: &engine::users::Hasher,
    limiter: &Limiter,
    peer: IpAddr,
    who: (&str, &str, &str),
) -> Result<(), ApiError> {
    let (user, client_id, token) = who;
    let rows = engine::store::actuators::list(&state.db, user)
        .await
        .map_err(|e| ApiError::Unavailable(format!("cannot check the client now: {e}")))?;
    let hashes: Vec<String> = rows
        .into_iter()
        .filter(|(r, _)| r.tunnel_client_id.as_deref() == Some(client_id))
        .filter_map(|(r, _)| r.tunnel_token_hash)
        .collect();
    let keys: Vec<[u8; 32]> = hashes
        .iter()
        .map(|h| {
            let mut d = Sha256::new();
            d.update(h.as_bytes());
            d.update([0u8]);
            d.update(token.as_bytes());
            d.finalize().into()
        })
        .collect();
    {
        let known = verified.0.lock().unwrap_or_else(|p| p.into_inner());
        if keys.iter().any(|k| known.contains(k)) {
            return Ok(());
        }
    }
    let attempt = limiter.begin(Realm::Tunnel, user, peer).inspect_err(|_| {
        log::warn!("tunnel: refused client {client_id:?} of {user:?} from {peer}: too many failed attempts");
    })?;
    let unknown = hashes.is_empty();
    // with no hash to match, one check against a dummy hash: the same time as a real one
    let found = match hasher.find(token, hashes).await {
        Ok(found) => found,
        Err(e) => {
            // a busy hasher is not the client's failure
            attempt.succeeded();
            return Err(e.into());
        }
    };
    match found {
        Some(i) => {
            attempt.succeeded();
            let mut known = verified.0.lock().unwrap_or_else(|p| p.into_inner());
            if known.len() > 10_000 {
                known.clear();
            }
            if let Some(k) = keys.get(i) {
                known.insert(*k);
            }
            Ok(())
        }
        None => {
            let why = if unknown {
                format!("unknown tunnel client id {client_id:?} for user {user:?}: no actuator of theirs has tunnel.clientId {client_id:?}")
            } else {
                format!("wrong token for tunnel client {client_id:?} of user {user:?}")
            };
            Err(refuse(&peer.to_string(), why))
        }
    }
}

/// Runs one client connection until it ends, is replaced or goes silent.
async fn serve(
    state: Arc<AppState>,
    info: ClientInfo,
    session: actix_ws::Session,
    mut stream: actix_ws::MessageStream,
) {
    let (pipe, ends) = tunnel::pipe::pipe();
    let (opener, _, driver) =
        tunnel::mux::start(pipe, tunnel::mux::Mode::Client, tunnel::mux::config(1024));
    let mut driver = tokio::spawn(driver);
    let tunnels = state.engine.tunnels.clone();
    let client = tunnels.connect(info, opener);
    log::info!(
        "tunnel: client {} of {} connected from {} (version {}, runs as {})",
        client.name(),
        client.info.owner,
        client.info.address,
        client.info.version,
        client.info.run_as
    );
    record_seen(&state, &client).await;
    let me = state.engine.settings.instance_id.clone();
    // the other servers of the database reach it through this one
    if let Err(e) = engine::store::machines::hold(&state.db, &client.info, &me).await {
        log::warn!(
            "tunnel: recording that {} is connected here: {e}",
            client.name()
        );
    }

    let tunnel::pipe::Ends {
        incoming,
        mut outgoing,
    } = ends;
    // server → client: what yamux writes
    let mut out_session = session.clone();
    let writer = actix_web::rt::spawn(async move {
        while let Some(b) = outgoing.recv().await {
            if out_session.binary(b).await.is_err() {
                break;
            }
        }
    });
    let mut pong_session = session.clone();
    let silent_after = Duration::from_secs(3 * tunnel::HEARTBEAT_SECS);
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    let mut last_recorded = std::time::Instant::now();
    let stopping = tunnels.stopping();
    let reason: String = loop {
        tokio::select! {
            msg = stream.recv() => match msg {
                Some(Ok(Message::Binary(b))) => {
                    client.touch();
                    if incoming.send(b).await.is_err() {
                        break "the tunnel session ended".into();
                    }
                }
                Some(Ok(Message::Ping(p))) => {
                    client.touch();
                    let _ = pong_session.pong(&p).await;
                }
                Some(Ok(Message::Pong(_))) => client.touch(),
                Some(Ok(Message::Text(_))) => {
                    let _ = session.clone().close(Some(CloseReason {
                        code: CloseCode::Unsupported,
                        description: Some("binary frames only".into()),
                    })).await;
                    break "it sent a text frame (binary frames only)".into();
                }
                Some(Ok(Message::Close(r))) => {
                    break format!("it closed the connection ({})", r.and_then(|r| r.description).unwrap_or_default());
                }
                Some(Ok(_)) => client.touch(),
                Some(Err(e)) => break format!("protocol error: {e}"),
                None => break "the connection dropped".into(),
            },
            ended = &mut driver => {
                let why = match ended {
                    Ok(Ok(())) => "the tunnel session ended".to_string(),
                    Ok(Err(e)) => format!("tunnel session error: {e}"),
                    Err(e) => format!("tunnel session failed: {e}"),
                };
                let _ = session.clone().close(Some(CloseReason {
                    code: CloseCode::Protocol,
                    description: Some(why.clone()),
                })).await;
                break why;
            }
            _ = stopping.cancelled() => {
                let _ = session.clone().close(Some(CloseReason {
                    code: CloseCode::Restart,
                    description: Some("the server is stopping; reconnect".into()),
                })).await;
                break "the server is stopping".into();
            }
            _ = client.closed.cancelled() => {
                let _ = session.clone().close(Some(CloseReason {
                    code: CloseCode::Policy,
                    description: Some("replaced by a new connection with the same id and label".into()),
                })).await;
                break "replaced by a new connection with the same id and label".into();
            }
            _ = tick.tick() => {
                let idle = engine::store::now_ms() - client.last_seen.load(std::sync::atomic::Ordering::Relaxed);
                if idle > silent_after.as_millis() as i64 {
                    let _ = session.clone().close(Some(CloseReason {
                        code: CloseCode::Away,
                        description: Some("no heartbeat".into()),
                    })).await;
                    break format!("silent for {}s", idle / 1000);
                }
                if last_recorded.elapsed() >= Duration::from_secs(30) {
                    last_recorded = std::time::Instant::now();
                    record_seen(&state, &client).await;
                }
            }
        }
    };
    tunnels.disconnect(&client);
    drop(incoming);
    writer.abort();
    driver.abort();
    record_seen(&state, &client).await;
    if tunnels
        .connected_here(
            &client.info.owner,
            &client.info.client_id,
            &client.info.label,
        )
        .is_none()
    {
        if let Err(e) = engine::store::machines::release(&state.db, &client.info, &me).await {
            log::debug!("tunnel: recording that {} left: {e}", client.name());
        }
    }
    log::info!(
        "tunnel: client {} of {} disconnected: {reason}",
        client.name(),
        client.info.owner
    );
}

/// Keeps the machine list's first/last seen (SPEC §10).
async fn record_seen(state: &AppState, client: &Arc<Client>) {
    if let Err(e) =
        engine::store::machines::seen(&state.db, &client.info, engine::store::now_ms()).await
    {
        // during a database outage the store has logged it once already
        if !e.is_transient() {
            log::warn!("tunnel: recording machine {}: {e}", client.name());
        }
    }
}
