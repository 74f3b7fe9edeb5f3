//! The Lua scripts the cluster runs in Redis for nicks and private lines.
//! Each is one step no other server can come between: a nick is checked
//! and claimed at once, so two servers can never both be granted it. Each
//! takes the key prefix and this server's id as ARGV[1] and ARGV[2].
//!
//! A nick's key holds the id of the server whose participant has it; it is
//! free if there is no key, or if that server's alive key has expired (the
//! server died without giving its nicks up): no key per nick to renew.

/// Gives out the next `user<N>` of the whole cluster that is free, and
/// claims it; `N` from one counter, so servers do not race for `user1`.
pub(super) const GREET: &str = "\
while true do
  local nick = 'user' .. redis.call('INCR', ARGV[1] .. 'users')
  local key = ARGV[1] .. 'nick:' .. nick
  local owner = redis.call('GET', key)
  if not owner or redis.call('EXISTS', ARGV[1] .. 'alive:' .. owner) == 0 then
    redis.call('SET', key, ARGV[2])
    return nick
  end
end";

/// Claims the nick ARGV[3] (lower case) unless a live other server has it;
/// if granted, gives up ARGV[4] (the old nick, or empty) if ours. Returns 1
/// if granted, 0 if not. This server's own key is granted again: the chat
/// has checked that no participant here has the nick.
pub(super) const CLAIM: &str = "\
local key = ARGV[1] .. 'nick:' .. ARGV[3]
local owner = redis.call('GET', key)
if owner and owner ~= ARGV[2] and redis.call('EXISTS', ARGV[1] .. 'alive:' .. owner) == 1 then
  return 0
end
redis.call('SET', key, ARGV[2])
if ARGV[4] ~= '' and ARGV[4] ~= ARGV[3] then
  local old = ARGV[1] .. 'nick:' .. ARGV[4]
  if redis.call('GET', old) == ARGV[2] then redis.call('DEL', old) end
end
return 1";

/// Gives up the nick ARGV[3] if this server has it (a compare-and-delete).
pub(super) const RELEASE: &str = "\
local key = ARGV[1] .. 'nick:' .. ARGV[3]
if redis.call('GET', key) == ARGV[2] then redis.call('DEL', key) end
return 1";

/// Publishes ARGV[4] on the channel of the live other server that has the
/// nick ARGV[3]; returns how many received it, 0 if no such server.
pub(super) const SEND: &str = "\
local owner = redis.call('GET', ARGV[1] .. 'nick:' .. ARGV[3])
if not owner or owner == ARGV[2] or redis.call('EXISTS', ARGV[1] .. 'alive:' .. owner) == 0 then
  return 0
end
return redis.call('PUBLISH', ARGV[1] .. 'server:' .. owner, ARGV[4])";
