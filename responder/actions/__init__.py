"""Actions: actions.d definitions, the template language, and the executor that carries bans out."""
