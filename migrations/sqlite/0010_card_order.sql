-- Cards to one channel go out in submission order, on every replica.
--
-- A card's post row names the channel it goes to (the role's channel when it was submitted).
-- The outbox claims, of those rows, only each channel's oldest undone one: a post put off
-- (Slack's 429, the channel's budget) holds back every later card of its channel until it is
-- done or given up, whichever replica claims next. Other rows (refreshes, replies, DMs,
-- announcements) have no channel and are claimed by due time as before.
ALTER TABLE slack_outbox ADD COLUMN channel TEXT;

-- Each channel's queue, oldest first: the claim walks it one channel at a time (a skip scan),
-- so its cost grows with the number of channels, not with the cards waiting in them.
CREATE INDEX slack_outbox_channel_queue ON slack_outbox (channel, id)
    WHERE done_at IS NULL AND channel IS NOT NULL;

-- The unordered rows by due time: a backlog of cards waiting in one channel is not scanned to
-- find them.
CREATE INDEX slack_outbox_unordered_due ON slack_outbox (due_at, id)
    WHERE done_at IS NULL AND channel IS NULL;
