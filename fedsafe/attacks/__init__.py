"""Safety attacks: data poisoning (generated or collected harmful pairs) and update poisoning."""
