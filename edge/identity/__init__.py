"""Who is calling: API keys, their secrets' pepper, authentication, accounts, browser sessions."""
