"""A RouterOS v7 CLI engine: tokenizer, schema-driven parser, expressions, printers and menus."""
