"""The actors of one gateway process: consumer -> decoder -> router -> sessions."""
