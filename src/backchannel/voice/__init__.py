"""Voice: audio in and out, voice activity, speech-to-text, text-to-speech."""
