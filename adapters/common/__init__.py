"""What every adapter shares: the message envelope, publishing and receipts."""
