"""Weight-free engines: LDR->HDR expansion and (later) bracket merging. No torch here."""
