"""Phone calls: Twilio Media Streams in and out of a call."""
