DROP TABLE command_results;
DROP TABLE commands;
DROP TABLE machines;
