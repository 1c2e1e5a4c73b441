import { loadDatabaseOptions } from "./src/config";
import { buildKnexConfig } from "./src/db/connection";

// Used by the knex command line, for example `npx knex migrate:latest`. It
// reads the same variables as the server: DATABASE_URL, or the embedded
// database in DATA_DIR when DATABASE_URL is unset.
export default buildKnexConfig(loadDatabaseOptions());
