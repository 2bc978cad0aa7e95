"""What every app shares: API tokens and their scopes, authentication, display helpers, accounts."""
