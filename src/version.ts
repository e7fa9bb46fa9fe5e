// The release; status and the controller link report it.
export const VERSION = '0.1.0';
