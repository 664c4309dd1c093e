"""The one path every Ask takes, and the retention policy it keeps: what this bot does with Slack content,
in full. `bot.pipeline.answer.Pipeline` runs the steps in this order.

1. Read only when invoked. Slack content is read only for an Ask a person made (a mention, a DM, a
   slash command, a message in an agent thread, a message shortcut), while it is being answered, and
   only from the conversation the Ask names: the thread it was made in (up to the invoking message), or
   the DM's top-level messages from the last DM_CONTEXT_HOURS. A slash command sends its own text
   alone. The manifest subscribes to no channel-wide message event.
2. Access first. Who may ask is decided before anything is read or any progress is shown
   (`bot.pipeline.access`): the id lists, then one `users.info` of the asker (workspace and org lists,
   deactivated accounts, guests, other organizations); a lookup that fails refuses. A refusal reads
   nothing and is told to the asker alone; so is the per-person rate (USER_REQUESTS_PER_MINUTE).
3. The viewed channel. The channel an agent-thread user is viewing is read only when their question is
   plainly about it (`context.asks_about_channel`), and only if the asker may read it at that moment
   (`AccessCheck.may_read`, asked at every read, its answer never kept): the channel lists apply, a DM
   or a channel another organization hosts is never read, a private channel or group DM only while the
   asker is a member, and so a public channel of a Grid org's workspace the asker is not in. Otherwise
   the answer comes from the thread alone and the asker is told privately.
   Linked threads follow the same rule (`bot.pipeline.links`): only links in the question itself (at
   most 3), each read only if `may_read` allows it then; one that may not be read is left out and the
   asker told privately; an answer drawing on a conversation other than the one asked in goes to the
   asker alone.
4. Read newest first, as far as the budget goes. A long thread is read back from the invoking message
   a page-sized time window at a time, a DM's history newest first, each only as far as
   CONTEXT_BUDGET_TOKENS can use and never more than `context.MAX_PAGES` pages (`bot.pipeline.context`).
5. What survives a read: author, timestamp and text (`context.slim`). Reactions, attachments, blocks
   and metadata are dropped at once; with SEND_FILES=on a file's id, name, type, size and private URL
   are kept too.
6. Turns (`bot.pipeline.prompt`). The bot's own messages become assistant turns; everyone else's are
   user turns that start with the speaker's display name, looked up for this request only. Same-role
   neighbours are merged, the first turn is a user turn and the last is the invoking message.
7. Redaction, oldest first (`bot.pipeline.redaction`). Before anything is measured or sent, secrets and
   the personal data REDACT_PERSONAL_DATA names become typed placeholders such as [slack token 1]: in
   every message, the conversation's then the viewed channel's, and in each shared file's title and
   text where its message stands, oldest first, so that placeholders are numbered as the thread was
   written and an unchanged thread reads the same on the next question. The table of values lives
   only as long as the request.
8. The budget: about CONTEXT_BUDGET_TOKENS (`bot.pipeline.tokens`: 4 ASCII characters a token, one
   for any other). The newest messages that fit are kept (the invoking message always, its middle left
   out if it alone is over), and one note tells Claude that older ones were left out.
9. Files (`bot.pipeline.files`), only with SEND_FILES=on: up to MAX_FILES of the kept messages' files,
   newest first, each within MAX_FILE_BYTES, are fetched into the request's memory and sent inside the
   Messages request itself (images, PDFs and text files; never the Files API). Each counts by a rough
   estimate; one that does not fit is left out, and Claude is told in one line how many were and why,
   never their names.
10. Nothing is kept. Content lives in the request's local variables and is gone when the answer is done: no
    database, no files, no cache of content, no message or answer text in any log line at any level
    (`bot.logs`); logs carry ids, counts, sizes and timings. Between requests the bot keeps ids, flags, counts
    and times only, each with a time limit, and this is all of it. In `bot.state` (this process's memory, or
    with REDIS_URL one Redis shared by every process, which needs no persistence:
    `--save "" --appendonly no`), each under the key named, where `<hash>` is a keyed hash of the ids
    (`bot.state.StateKeys`) and `bot.policy.REDIS_KEYS` is the list `/claude policy` shows:
    `dedupe:event:<hash>` Slack event ids (an hour) and, in HTTP mode, `dedupe:interaction:<hash>` interaction
    trigger ids (15 minutes), so each is answered once (`bot.guards`); `rate:<hash>` each person's request
    count (a minute; `bot.limits`); with USER_TOKENS_PER_DAY, `tokens:<hash>` each person's token count for
    the day (until midnight UTC; `bot.limits`); `person:<hash>` each recent asker's team and org ids and guest
    and deactivated flags (five minutes; `bot.pipeline.access`); `viewed:<hash>` the channel id an agent
    thread's user is viewing (while Slack's context says so, at most a day; `bot.pipeline.viewed`); and for
    answers being written (`bot.pipeline.inflight`), `stop:<hash>` a Stop for a thread (a minute),
    `answer:<hash>` where the question and the answer are (workspace, channel and message ids, no person's id;
    the request deadline plus one lease), `lease:<hash>` which process writes it (ANSWER_LEASE_SECONDS,
    renewed), `takeover:<hash>` one process's right to answer it again after its writer died, and
    `answers:<hash>` the set of those answers' hashes (each as long as its `answer:` key). In this process
    only: the answers it is writing, until they end (so that Stop can cancel them); the bot's own team and org
    ids from auth.test (while the process runs; `bot.pipeline.access`); and when display-name lookups may
    resume after Slack rate-limited one (a minute; `bot.pipeline.context`).
11. Library caches count as memory. aiohttp parses every URL through yarl, whose module-level caches
    (like `urllib.parse`'s) would keep a file's `url_private` (which names the file) and a command's
    `response_url` (which can post to the asker for 30 minutes): `bot.pipeline.url_caches` empties them
    as each request ends.
12. Claude: the Messages API only, which is eligible for Anthropic's zero data retention (ZDR is an
    agreement between your organization and Anthropic, not a request flag); on Bedrock or Vertex AI
    (`bot.backends`) the cloud provider's terms apply instead. The Slack user is sent as a keyed hash
    in `metadata.user_id` (`claude.opaque_user_id`), never a name or an email.
"""
