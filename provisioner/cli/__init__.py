"""The thin click layer: parse options, call the library, print. No logic lives here."""
