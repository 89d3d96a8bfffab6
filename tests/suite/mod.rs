mod alarm;
mod cli;
mod cpe;
