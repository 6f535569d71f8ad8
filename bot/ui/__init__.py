"""Discord helpers the cogs share: replies, the job buttons and views, result messages and delivery."""
