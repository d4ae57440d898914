-- The values of checks' sensitive headers (Authorization, cookies, tokens...), by check id and
-- header name: kept apart from `checks`, whose JSON shows them redacted like every view.
ALTER TABLE instances ADD COLUMN check_secrets jsonb;
