mod alarm;
mod cli;
mod cpe;
mod ovoc;
mod session;
